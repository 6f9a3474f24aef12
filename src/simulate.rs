//! `meridian simulate`: what a change would do to real traffic, before it is made (SPEC "Day
//! two"). Recorded queries — a dnstap capture as the query log writes it, or text lines
//! `qname qtype client [ecs]` — are replayed through the request handler that answers on the
//! wire ([`crate::dns::handle_traced`], as `explain` uses it) twice: once with the config as it
//! is (every endpoint up, the drains saved in `state_dir` in force, as after a restart) and once
//! under the change (`--down`, `--drain`, `--undrain`, or another config with `--new-config`). It prints, per service and region, the share of answers
//! in each case and how many client networks would be answered from a different set of regions.
//!
//! Both runs use their own freshly loaded snapshot (its own health table and round-robin
//! counters), and each query gets the same random numbers in both ([`crate::base::random::seed_random`]),
//! so a weighted or round-robin answer differs between them only because of the change.
//!
//! A "client network" is the ECS subnet a query carried, or its source address without one (a
//! resolver). A network moves to another region when the regions it is answered from
//! (endpoints, for endpoints without a region) are not the same set in the two runs; to another
//! endpoint when the endpoints it is answered with are not (a move inside a region still
//! empties caches and connection pools).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use serde_json::{json, Value};
use smallvec::SmallVec;

use crate::base::out::{EXIT_INVALID, EXIT_OK};
use crate::dns::{handle_traced, Transport};
use crate::policy::drains::Rule;
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
    /// `X:SHARE` (`eu-west:25%`, `eu-west:0.25`) drains it for that share of client networks
    /// only, as `meridian drain --share` does.
    #[arg(long, value_name = "X")]
    pub drain: Vec<String>,
    /// Under the change, this endpoint or region is no longer drained (e.g. a saved drain
    /// lifted); repeatable.
    #[arg(long, value_name = "X")]
    pub undrain: Vec<String>,
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

/// The client network of a query: its ECS subnet, else the source address (as a /32 or /128).
fn network_of(q: &Recorded) -> (IpAddr, u8) {
    let ecs = Message::from_vec(&q.packet).ok().and_then(|m| {
        match m.edns.as_ref()?.option(EdnsCode::Subnet)? {
            EdnsOption::Subnet(s) if s.source_prefix() > 0 => {
                Some((truncate(s.addr(), s.source_prefix()), s.source_prefix()))
            }
            _ => None,
        }
    });
    ecs.unwrap_or_else(|| {
        let ip = q.client.to_canonical();
        (ip, if ip.is_ipv4() { 32 } else { 128 })
    })
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

/// Names (services, regions, endpoints) as small numbers: a capture of millions of queries
/// holds numbers per client network, not strings.
#[derive(Default)]
struct Names {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.to_string());
        self.ids.insert(s.to_string(), i);
        i
    }
    fn name(&self, i: u32) -> &str {
        self.names.get(i as usize).map_or("?", String::as_str)
    }
}

/// A service of one snapshot, named: its id and, per endpoint, its place (region, or the
/// endpoint itself without one) and its own id.
struct Labels {
    service: u32,
    place: Vec<u32>,
    endpoint: Vec<u32>,
}

fn labels(snap: &Snapshot, names: &mut Names) -> HashMap<Name, Labels> {
    snap.services
        .iter()
        .map(|svc| {
            let service = names.id(svc.name.to_ascii().trim_end_matches('.'));
            let place = svc
                .endpoints
                .iter()
                .map(|e| match e.region.and_then(|r| snap.regions.get(r)) {
                    Some(r) => names.id(&r.name),
                    None => names.id(&e.label()),
                })
                .collect();
            let endpoint = svc.endpoints.iter().map(|e| names.id(&e.label())).collect();
            (
                svc.name.clone(),
                Labels {
                    service,
                    place,
                    endpoint,
                },
            )
        })
        .collect()
}

type Ids = SmallVec<[u32; 4]>;

/// How one query was answered at a balanced name.
struct Answer {
    service: u32,
    /// The place of each answered endpoint; for NODATA or SERVFAIL the id of `(no address)`
    /// or `(servfail)`.
    places: Ids,
    endpoints: Ids,
}

/// Answers query number `i` against `snap`; `None` when it is not at a balanced name. The
/// random stream restarts from `i`, so both runs draw the same numbers for it.
fn answer(
    snap: &Snapshot,
    labels: &HashMap<Name, Labels>,
    names: &mut Names,
    i: usize,
    q: &Recorded,
) -> Option<Answer> {
    crate::base::random::seed_random(i as u64);
    let mut trace = Trace::default();
    let resp = handle_traced(
        snap,
        &q.packet,
        SocketAddr::new(q.client, 53000),
        Transport::Tcp,
        Some(&mut trace),
    )?;
    let l = labels.get(trace.service.as_ref()?)?;
    let mut places: Ids = trace
        .picks
        .iter()
        .filter_map(|&p| l.place.get(p).copied())
        .collect();
    let endpoints: Ids = trace
        .picks
        .iter()
        .filter_map(|&p| l.endpoint.get(p).copied())
        .collect();
    if places.is_empty() {
        let servfail = resp.get(3).is_some_and(|b| b & 0x0f == 2);
        places.push(names.id(if servfail {
            "(servfail)"
        } else {
            "(no address)"
        }));
    }
    Some(Answer {
        service: l.service,
        places,
        endpoints,
    })
}

/// What an override does to the endpoints it names.
#[derive(Clone, Copy, PartialEq)]
enum Act {
    Down,
    Drain,
    Undrain,
}

impl Act {
    fn flag(self) -> &'static str {
        match self {
            Act::Down => "--down",
            Act::Drain => "--drain",
            Act::Undrain => "--undrain",
        }
    }
}

/// Marks endpoints down, drained or undrained in `snap` (a private copy): by address, target
/// name or region name.
fn apply(snap: &Snapshot, what: &str, act: Act) -> Result<(), String> {
    let flag = act.flag();
    if mark(snap, what, act, 1.0) {
        return Ok(());
    }
    // `X:SHARE`: a partial drain. An IPv6 address also has colons, so this is asked only once
    // the whole word matched nothing.
    if let Some((x, share)) = what.rsplit_once(':') {
        let parsed = match share.trim().strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
            None => share.trim().parse::<f64>(),
        };
        if act == Act::Drain && !x.is_empty() {
            if let Ok(v) = parsed {
                if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                    return Err(format!(
                        "--drain {what}: the share must be above 0 and at most 100 % (e.g. {x}:25%)"
                    ));
                }
                if mark(snap, x, act, v) {
                    return Ok(());
                }
                return Err(format!(
                    "{flag} {x}: no endpoint address, target or region of that name"
                ));
            }
        }
    }
    Err(format!(
        "{flag} {what}: no endpoint address, target or region of that name"
    ))
}

/// Applies `act` to the endpoints `what` names (a drain for `share` of client networks, as
/// the server's partial drains); whether any matched.
fn mark(snap: &Snapshot, what: &str, act: Act, share: f64) -> bool {
    let by_addr = what.parse::<IpAddr>().ok();
    let mut matched = false;
    for svc in &snap.services {
        for e in &svc.endpoints {
            let region = e.region.map(|r| snap.regions[r].name.as_str());
            if Some(e.addr) == by_addr
                || (e.target.is_some() && e.label().eq_ignore_ascii_case(what))
                || region == Some(what)
            {
                match act {
                    Act::Down => e.state.set_healthy(false),
                    Act::Drain if share < 1.0 => {
                        e.state.set_drain_share(share);
                        svc.set_partial(true);
                    }
                    Act::Drain => e.state.set_drained(true),
                    Act::Undrain => {
                        e.state.set_drained(false);
                        e.state.set_drain_share(0.0);
                    }
                }
                matched = true;
            }
        }
    }
    matched
}

/// Per service: answers per place in each run, and per client network the places and
/// endpoints it was answered with in each run (sorted, without repeats).
#[derive(Default)]
struct Tally {
    answers: [u64; 2],
    share: HashMap<u32, [f64; 2]>,
    networks: HashMap<(IpAddr, u8), [[Ids; 2]; 2]>,
}

fn add_all(set: &mut Ids, ids: &[u32]) {
    for &i in ids {
        if let Err(at) = set.binary_search(&i) {
            set.insert(at, i);
        }
    }
}

impl Tally {
    fn add(&mut self, run: usize, network: (IpAddr, u8), a: &Answer) {
        self.answers[run] += 1;
        let part = 1.0 / a.places.len() as f64;
        for p in &a.places {
            self.share.entry(*p).or_default()[run] += part;
        }
        let sets = self.networks.entry(network).or_default();
        add_all(&mut sets[0][run], &a.places);
        add_all(&mut sets[1][run], &a.endpoints);
    }
}

/// Replays every query under both snapshots. Returns the tallies per service id and how many
/// queries were at a balanced name in either run.
fn compare(
    queries: &[Recorded],
    now: &Snapshot,
    after: &Snapshot,
    names: &mut Names,
) -> (HashMap<u32, Tally>, usize) {
    let (now_labels, after_labels) = (labels(now, names), labels(after, names));
    let mut services: HashMap<u32, Tally> = HashMap::new();
    let mut balanced = 0;
    for (i, q) in queries.iter().enumerate() {
        let a = answer(now, &now_labels, names, i, q);
        let b = answer(after, &after_labels, names, i, q);
        if a.is_none() && b.is_none() {
            continue;
        }
        balanced += 1;
        let network = network_of(q);
        for (run, answer) in [a, b].iter().enumerate() {
            if let Some(x) = answer {
                services.entry(x.service).or_default().add(run, network, x);
            }
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

/// The report as JSON: `{queries, balanced, change, services: [{name, answers: {now, after},
/// regions: [{region, now, after, change}], networks, moved, moved_endpoint}]}`; shares and
/// changes in percent; services and regions in name order.
fn report_json(
    queries: usize,
    balanced: usize,
    change: &[String],
    services: &HashMap<u32, Tally>,
    names: &Names,
) -> Value {
    let mut list: Vec<(&str, &Tally)> = services.iter().map(|(k, t)| (names.name(*k), t)).collect();
    list.sort_by(|a, b| a.0.cmp(b.0));
    let services: Vec<Value> = list
        .into_iter()
        .map(|(name, t)| {
            let total = [t.answers[0] as f64, t.answers[1] as f64];
            let mut regions: Vec<(&str, [f64; 2])> =
                t.share.iter().map(|(k, v)| (names.name(*k), *v)).collect();
            regions.sort_by(|a, b| a.0.cmp(b.0));
            let regions: Vec<Value> = regions
                .into_iter()
                .map(|(r, v)| {
                    let (now, after) = (pct(v[0], total[0]), pct(v[1], total[1]));
                    // The change from the unrounded shares: 66.7 − 33.3 is 33.3 here, not 33.4.
                    let raw = |i: usize| {
                        if total[i] > 0.0 {
                            v[i] / total[i] * 100.0
                        } else {
                            0.0
                        }
                    };
                    let change = ((raw(1) - raw(0)) * 10.0).round() / 10.0 + 0.0; // no "-0.0"
                    json!({"region": r, "now": now, "after": after, "change": change})
                })
                .collect();
            let moved = t.networks.values().filter(|s| s[0][0] != s[0][1]).count();
            let moved_endpoint = t.networks.values().filter(|s| s[1][0] != s[1][1]).count();
            json!({
                "name": name,
                "answers": {"now": t.answers[0], "after": t.answers[1]},
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
    let saved = &v["saved_drains"];
    let names = |k: &str| -> Vec<&str> {
        saved[k]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    let drains = match saved["error"].as_str() {
        Some(e) => format!("saved drains NOT applied: {e}"),
        None if names("applied").is_empty() => format!(
            "nothing drained (no saved drains in {})",
            saved["file"].as_str().unwrap_or("?")
        ),
        None => {
            let mut d = format!(
                "saved drains from {}: {}",
                saved["file"].as_str().unwrap_or("?"),
                names("applied").join(", ")
            );
            if !names("undrained").is_empty() {
                d.push_str(&format!(" (except {})", names("undrained").join(", ")));
            }
            d
        }
    };
    out.push_str(&format!("now:   {config}, every endpoint up, {drains}\n"));
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

/// The drain rules the server saved in `state_dir` (what it restores at start), read without
/// changing anything on disk, and the file's path. A missing file is no rules.
fn saved_drains(snap: &Snapshot) -> Result<(Vec<Rule>, PathBuf), String> {
    let state = snap.config.state_dir();
    let rules = crate::policy::drains::read_saved(&state)?;
    Ok((rules, state.join(crate::policy::drains::FILE)))
}

/// Sets each endpoint's drained flag as the server does from `rules` (the same function).
fn apply_saved(snap: &Snapshot, rules: &[Rule]) {
    crate::policy::drains::apply_rules(rules, &snap.services, &snap.regions);
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
    // The drains in force (as saved by the server) hold in both runs, as after a restart.
    let saved = saved_drains(&now);
    if let Ok((rules, _)) = &saved {
        apply_saved(&now, rules);
        apply_saved(&after, rules);
    }
    for (list, act) in [
        (&args.down, Act::Down),
        (&args.drain, Act::Drain),
        (&args.undrain, Act::Undrain),
    ] {
        for x in list {
            if let Err(e) = apply(&after, x, act) {
                eprintln!("meridian simulate: {e}");
                return EXIT_INVALID;
            }
            change.push(format!("{} {x}", act.flag()));
        }
    }
    if change.is_empty() {
        change.push("(no change given: both runs are the same)".into());
    }
    let mut names = Names::default();
    let (services, balanced) = compare(&queries, &now, &after, &mut names);
    let mut v = report_json(queries.len(), balanced, &change, &services, &names);
    v["saved_drains"] = match &saved {
        Ok((rules, path)) => json!({
            "file": path.display().to_string(),
            "applied": rules.iter().filter(|r| r.drain).map(|r| r.scope.describe()).collect::<Vec<_>>(),
            "undrained": rules.iter().filter(|r| !r.drain).map(|r| r.scope.describe()).collect::<Vec<_>>(),
        }),
        Err(e) => json!({"error": e}),
    };
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
