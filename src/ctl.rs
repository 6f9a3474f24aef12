//! The control commands: `meridian status`, `drain`, `undrain`, `reload` and `explain --live`
//! speak to a running server's admin API (SPEC "CLI"), so an operator needs neither curl nor
//! the JSON shapes. `status` prints the live state as tables in the style of
//! `gdnsdctl states`; `--json` prints `/status` as it came.
//!
//! Where the API is, first found of: `--admin URL` (`http://` may be left out), `[admin].listen`
//! of the config given by `--config`, `$MERIDIAN_ADMIN`, the config `$MERIDIAN_CONFIG` names,
//! `config/meridian.toml`, `/etc/meridian/meridian.toml` (so a packaged host needs no flag in
//! any folder). An unspecified address such as `0.0.0.0` means this host's loopback.
//! Output goes through [`crate::base::out::outln`]: a closed pipe ends it quietly and the command
//! keeps its own exit status (the change it made stands). The token: `--token`, else `MERIDIAN_TOKEN`, else — when the
//! address came from the config — that config's `admin.token`, since whoever can read the
//! config may use it.
//!
//! Exit codes as for the rest of the CLI: 0 ok; 1 invalid input (bad arguments, a token the
//! server refused, an unknown endpoint or region, a rejected reload — every 4xx); 2 runtime
//! failure (the server cannot be reached, or failed: 5xx). Messages go to stderr and never
//! include the token.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{ArgGroup, Args};
use serde_json::Value;

use crate::base::out::{errln, out, outln, EXIT_INVALID, EXIT_OK, EXIT_RUNTIME};
use crate::status::{self, Status};

/// How long to wait for the server to accept a connection; it is on this host or near it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for an answer: a reload of a large config may take up to the admin API's own
/// 30 s request limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(35);

/// Where the admin API is.
#[derive(Args, Debug, Clone)]
pub struct Admin {
    /// Admin API URL, e.g. http://127.0.0.1:9053 [default: [admin].listen of --config, else
    /// $MERIDIAN_ADMIN, else of $MERIDIAN_CONFIG, config/meridian.toml, /etc/meridian/meridian.toml]
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// Config whose [admin].listen (and admin.token) to use when --admin is not given.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// The config files looked at, in order, when neither `--config` nor `$MERIDIAN_CONFIG` names
/// one: a checkout's, then a packaged host's.
pub const CONFIG_PLACES: [&str; 2] = ["config/meridian.toml", "/etc/meridian/meridian.toml"];

/// The config a command that was given no `--config` reads: `$MERIDIAN_CONFIG`, else the first
/// of [`CONFIG_PLACES`] that exists (else the first, for the error message).
pub fn default_config() -> PathBuf {
    if let Some(p) = std::env::var_os("MERIDIAN_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    CONFIG_PLACES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(CONFIG_PLACES[0]))
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub admin: Admin,
    /// Print /status as JSON, as the server sent it.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("what").required(true).args(["endpoint", "region"])))]
pub struct DrainArgs {
    /// An endpoint, by its address: of --service, else of every service that has it.
    #[arg(long, value_name = "ADDR", conflicts_with = "region")]
    pub endpoint: Option<String>,
    /// Only this service's --endpoint; with --region, only that service's endpoints in the region.
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// A whole region (of every service, or of --service).
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// Drain only this share of client networks (/24, /56), chosen by hash and sticky: `25%`
    /// or `0.25`; raising it later moves only more networks away [default: all]
    #[arg(long, value_name = "SHARE", value_parser = parse_share)]
    pub share: Option<f64>,
    #[command(flatten)]
    pub admin: Admin,
    /// Bearer token [default: $MERIDIAN_TOKEN, else admin.token of --config]
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("state").required(true).args(["up", "down"])))]
pub struct PushArgs {
    /// The `push` health profile.
    #[arg(long, value_name = "NAME")]
    pub profile: String,
    /// The endpoint, by its address or target name.
    #[arg(long, value_name = "ADDR")]
    pub endpoint: String,
    /// The endpoint passes this check.
    #[arg(long)]
    pub up: bool,
    /// The endpoint fails this check.
    #[arg(long)]
    pub down: bool,
    /// Its load, for least-loaded (a number, 0 or more).
    #[arg(long, value_name = "N")]
    pub load: Option<f64>,
    #[command(flatten)]
    pub admin: Admin,
    /// Bearer token [default: $MERIDIAN_TOKEN, else admin.token of --config]
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
}

#[derive(Args, Debug)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub admin: Admin,
    /// Bearer token [default: $MERIDIAN_TOKEN, else admin.token of --config]
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
}

/// A failure, with the exit code it means.
struct Failure {
    code: i32,
    message: String,
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure {
        code: EXIT_INVALID,
        message: message.into(),
    }
}

fn runtime(message: impl Into<String>) -> Failure {
    Failure {
        code: EXIT_RUNTIME,
        message: message.into(),
    }
}

/// The admin API resolved: its base URL and the token from the config, if it came from one.
struct Target {
    base: reqwest::Url,
    config_token: Option<String>,
}

/// Finds the admin API (SPEC "Day two"): `--admin`, the config given by `--config`,
/// `$MERIDIAN_ADMIN`, `$MERIDIAN_CONFIG`, `config/meridian.toml`, `/etc/meridian/meridian.toml`.
fn target(a: &Admin) -> Result<Target, Failure> {
    if let Some(given) = &a.admin {
        return target_url(given, "--admin");
    }
    if let Some(config) = &a.config {
        return target_config(config);
    }
    if let Some(given) = std::env::var("MERIDIAN_ADMIN")
        .ok()
        .filter(|v| !v.is_empty())
    {
        return target_url(&given, "MERIDIAN_ADMIN");
    }
    let config = default_config();
    if !config.is_file() && std::env::var_os("MERIDIAN_CONFIG").is_none() {
        return Err(invalid(format!(
            "no admin API address: give --admin URL or --config PATH, or set MERIDIAN_ADMIN or \
             MERIDIAN_CONFIG (neither {} nor {} exists)",
            CONFIG_PLACES[0], CONFIG_PLACES[1]
        )));
    }
    target_config(&config)
}

fn target_url(given: &str, from: &str) -> Result<Target, Failure> {
    {
        let text = if given.contains("://") {
            given.to_string()
        } else {
            format!("http://{given}")
        };
        let base = reqwest::Url::parse(&text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                invalid(format!(
                    "{from} `{given}` is not a URL like http://127.0.0.1:9053"
                ))
            })?;
        Ok(Target {
            base,
            config_token: None,
        })
    }
}

fn target_config(path: &std::path::Path) -> Result<Target, Failure> {
    let examined = crate::config::examine(path);
    let Some(config) = examined.config else {
        let why = examined
            .problems
            .first()
            .map_or_else(|| "cannot be read".to_string(), |p| p.to_string());
        return Err(invalid(format!(
            "no admin API address: {why}\n(give --admin URL, or --config with an [admin] section)"
        )));
    };
    let Some(admin) = config.config.admin.as_ref() else {
        return Err(invalid(format!(
            "{} has no [admin] section: give --admin URL",
            path.display()
        )));
    };
    let listen = admin.listen.get_ref();
    let mut sa: std::net::SocketAddr = listen.parse().map_err(|_| {
        invalid(format!(
            "{}: admin.listen `{listen}` is not an address:port",
            path.display()
        ))
    })?;
    // Listening on every address: this host's loopback reaches it.
    if sa.ip().is_unspecified() {
        sa.set_ip(match sa.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let base = reqwest::Url::parse(&format!("http://{sa}"))
        .map_err(|e| invalid(format!("admin.listen `{listen}`: {e}")))?;
    Ok(Target {
        base,
        config_token: admin.token.clone().filter(|t| !t.is_empty()),
    })
}

fn token(given: &Option<String>, t: &Target) -> Option<String> {
    given
        .clone()
        .or_else(|| std::env::var("MERIDIAN_TOKEN").ok())
        .filter(|t| !t.is_empty())
        .or_else(|| t.config_token.clone())
}

/// Runs `f` on a small runtime of its own, and turns a failure into its message and exit code.
fn run(cmd: &str, f: impl std::future::Future<Output = Result<(), Failure>>) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("meridian {cmd}: cannot start runtime: {e}");
            return EXIT_RUNTIME;
        }
    };
    match rt.block_on(f) {
        Ok(()) => EXIT_OK,
        Err(f) => {
            // An empty message: the command has said what went wrong already.
            if !f.message.is_empty() {
                errln!("meridian {cmd}: {}", f.message);
            }
            f.code
        }
    }
}

fn client() -> Result<reqwest::Client, Failure> {
    reqwest::Client::builder()
        // The admin API is local or on a management network: never through a proxy.
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("meridian/", env!("CARGO_PKG_VERSION"), " ctl"))
        .build()
        .map_err(|e| runtime(format!("HTTP client: {e}")))
}

/// The innermost cause of a request error, e.g. "Connection refused (os error 111)".
fn cause(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cur {
        msg = err.to_string();
        cur = err.source();
    }
    msg
}

/// One request; the status and the body. Errors reaching the server are runtime failures.
async fn call(
    method: reqwest::Method,
    url: reqwest::Url,
    token: Option<&str>,
    body: Option<String>,
) -> Result<(u16, String), Failure> {
    let shown = url.as_str().to_string();
    let mut req = client()?.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(b);
    }
    let resp = req.send().await.map_err(|e| {
        let what = if e.is_timeout() {
            "no answer in time".to_string()
        } else {
            cause(&e)
        };
        runtime(format!(
            "cannot reach the admin API at {shown}: {what} (is `meridian serve` running, \
             with [admin] listen there?)"
        ))
    })?;
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .await
        .map_err(|e| runtime(format!("reading the answer of {shown}: {}", cause(&e))))?;
    Ok((status, text))
}

/// The `error` of a JSON error body, else the body itself (shortened).
fn error_text(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| body.trim().chars().take(300).collect())
}

/// A non-2xx answer as a failure: 4xx is the caller's mistake (exit 1), the rest the server's.
fn refused(status: u16, body: &str) -> Failure {
    let mut msg = format!("{} (HTTP {status})", error_text(body));
    if status == 401 {
        msg.push_str("; give the admin.token with --token or MERIDIAN_TOKEN");
    }
    if (400..500).contains(&status) {
        invalid(msg)
    } else {
        runtime(msg)
    }
}

fn json(body: &str, what: &str) -> Result<Value, Failure> {
    serde_json::from_str(body).map_err(|e| runtime(format!("{what} is not JSON: {e}")))
}

fn url(base: &reqwest::Url, path: &str) -> Result<reqwest::Url, Failure> {
    base.join(path)
        .map_err(|e| invalid(format!("admin URL {base}: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Commands

pub fn status(args: StatusArgs) -> i32 {
    run("status", async move {
        let t = target(&args.admin)?;
        let (code, body) = call(reqwest::Method::GET, url(&t.base, "status")?, None, None).await?;
        if !(200..300).contains(&code) {
            return Err(refused(code, &body));
        }
        if args.json {
            outln!("{}", body.trim_end());
            return Ok(());
        }
        let doc: Status = serde_json::from_str(&body)
            .map_err(|e| runtime(format!("/status is not a status document: {e}")))?;
        out!("{}", render(&doc, SystemTime::now()));
        Ok(())
    })
}

/// `--share`: `25%` (or `25 %`) or `0.25`, in (0, 1].
fn parse_share(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("`{s}` is not a share: write 25% or 0.25"))?;
    if v.is_finite() && v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!(
            "`{s}` is not a share between 0 and 100 % (write 25% or 0.25)"
        ))
    }
}

/// A drain share as people read it: `25 %`, `12.5 %`.
pub fn share_words(share: f64) -> String {
    let p = share * 100.0;
    if (p - p.round()).abs() < 1e-6 {
        format!("{p:.0} %")
    } else {
        format!("{p:.1} %")
    }
}

pub fn drain(args: DrainArgs, drain: bool) -> i32 {
    let cmd = if drain { "drain" } else { "undrain" };
    run(cmd, async move {
        let t = target(&args.admin)?;
        let mut body = serde_json::Map::new();
        for (k, v) in [
            ("service", &args.service),
            ("endpoint", &args.endpoint),
            ("region", &args.region),
        ] {
            if let Some(v) = v {
                body.insert(k.into(), Value::String(v.clone()));
            }
        }
        if let Some(s) = args.share {
            body.insert("share".into(), Value::from(s));
        }
        let path = format!("api/v1/{cmd}");
        let token = token(&args.token, &t);
        let (code, text) = call(
            reqwest::Method::POST,
            url(&t.base, &path)?,
            token.as_deref(),
            Some(Value::Object(body).to_string()),
        )
        .await?;
        if !(200..300).contains(&code) {
            return Err(refused(code, &text));
        }
        let v = json(&text, "the answer")?;
        let eps = v["endpoints"].as_array().cloned().unwrap_or_default();
        let share = v["share"].as_f64().filter(|s| *s > 0.0 && *s < 1.0);
        outln!(
            "{}{}: {} endpoint{}",
            if drain { "drained" } else { "undrained" },
            share
                .map(|s| format!(" {}", share_words(s)))
                .unwrap_or_default(),
            eps.len(),
            if eps.len() == 1 { "" } else { "s" }
        );
        for e in &eps {
            outln!(
                "  {}  {}  {}",
                e["service"].as_str().unwrap_or("-"),
                e["endpoint"].as_str().unwrap_or("-"),
                e["region"].as_str().unwrap_or("-")
            );
        }
        if let Some(w) = v.get("warning").and_then(Value::as_str) {
            errln!("meridian {cmd}: warning: {w}");
        }
        Ok(())
    })
}

/// `meridian push`: `PUT /api/v1/health`, a `push` profile's state of one endpoint.
pub fn push(args: PushArgs) -> i32 {
    run("push", async move {
        let t = target(&args.admin)?;
        let mut body = serde_json::json!({
            "profile": args.profile,
            "endpoint": args.endpoint,
            "up": args.up && !args.down,
        });
        if let Some(l) = args.load {
            body["load"] = serde_json::json!(l);
        }
        let token = token(&args.token, &t);
        let (code, text) = call(
            reqwest::Method::PUT,
            url(&t.base, "api/v1/health")?,
            token.as_deref(),
            Some(body.to_string()),
        )
        .await?;
        if !(200..300).contains(&code) {
            return Err(refused(code, &text));
        }
        let v = json(&text, "the answer")?;
        let services = v["services"].as_array().cloned().unwrap_or_default();
        outln!(
            "{} {} {}: {} service{}",
            args.profile,
            args.endpoint,
            if args.up { "up" } else { "down" },
            services.len(),
            if services.len() == 1 { "" } else { "s" }
        );
        for s in &services {
            outln!(
                "  {}  {}",
                s["service"].as_str().unwrap_or("-"),
                if s["healthy"].as_bool().unwrap_or(false) {
                    "healthy"
                } else {
                    "unhealthy"
                }
            );
        }
        Ok(())
    })
}

pub fn reload(args: ReloadArgs) -> i32 {
    run("reload", async move {
        let t = target(&args.admin)?;
        let token = token(&args.token, &t);
        let (code, text) = call(
            reqwest::Method::POST,
            url(&t.base, "api/v1/reload")?,
            token.as_deref(),
            None,
        )
        .await?;
        if code == 422 {
            // Rejected: every problem, one per line as file:line:col: message.
            errln!("meridian reload: the new config was rejected; the old one keeps serving:");
            for line in error_text(&text).lines() {
                errln!("{line}");
            }
            return Err(invalid(""));
        }
        if !(200..300).contains(&code) {
            return Err(refused(code, &text));
        }
        let v = json(&text, "the answer")?;
        outln!(
            "reloaded: generation {}",
            v["generation"]
                .as_u64()
                .map_or_else(|| "?".into(), |g| g.to_string())
        );
        Ok(())
    })
}

/// The query of `explain --live`.
pub struct LiveQuery {
    pub name: String,
    pub rtype: String,
    pub client: std::net::IpAddr,
    pub ecs: Option<String>,
    pub json: bool,
}

pub fn explain_live(admin: Admin, q: LiveQuery) -> i32 {
    run("explain", async move {
        let t = target(&admin)?;
        let mut u = url(&t.base, "api/v1/explain")?;
        u.query_pairs_mut()
            .append_pair("name", &q.name)
            .append_pair("type", &q.rtype)
            .append_pair("client", &q.client.to_string())
            .append_pair("format", if q.json { "json" } else { "text" });
        if let Some(e) = &q.ecs {
            u.query_pairs_mut().append_pair("ecs", e);
        }
        let (code, text) = call(reqwest::Method::GET, u, None, None).await?;
        if !(200..300).contains(&code) {
            return Err(refused(code, &text));
        }
        outln!("{}", text.trim_end());
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// The status tables

/// Columns padded to their widest cell, two spaces apart.
fn table(rows: &[Vec<String>], indent: &str) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = indent.to_string();
        for (c, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < r.len() {
                let pad = widths[c] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// "4.2s ago", "3m ago", "2h ago", "5d ago" for an RFC 3339 time; the time itself if it
/// does not parse.
fn ago(at: &str, now: SystemTime) -> String {
    let Ok(t) = humantime::parse_rfc3339_weak(at) else {
        return at.to_string();
    };
    let d = now.duration_since(t).unwrap_or_default().as_secs_f64();
    if d < 10.0 {
        format!("{d:.1}s ago")
    } else if d < 120.0 {
        format!("{d:.0}s ago")
    } else if d < 7200.0 {
        format!("{:.0}m ago", d / 60.0)
    } else if d < 172_800.0 {
        format!("{:.0}h ago", d / 3600.0)
    } else {
        format!("{:.0}d ago", d / 86400.0)
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::String(x) => x.clone(),
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(" "),
        Value::Number(n) => n.to_string(),
        Value::Object(_) => v.to_string(),
    }
}

/// An object's fields as `key value` pairs on one line; times (keys `since`, `at`, `*_at`) get
/// their age. Used for the sections other parts of the server add (anycast, fleet), whatever
/// their exact fields.
fn fields(v: &Value, now: SystemTime) -> String {
    let Some(o) = v.as_object() else {
        return s(v);
    };
    o.iter()
        .map(|(k, x)| {
            let val = match x {
                Value::String(t) if k == "since" || k == "at" || k.ends_with("_at") => {
                    format!("{t} ({})", ago(t, now))
                }
                _ => s(x),
            };
            format!("{k} {val}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |m| {
        if m < 10.0 {
            format!("{m:.2}ms")
        } else {
            format!("{m:.0}ms")
        }
    })
}

/// An answer share: a fraction (≤ 1) or a percentage.
fn share(v: &Value) -> String {
    v.as_f64().map_or_else(
        || s(v),
        |x| {
            let pct = if x <= 1.0 { x * 100.0 } else { x };
            format!("{pct:.1}%")
        },
    )
}

/// `/status` given as JSON, as tables ([`render`]); JSON that is not a status document shows
/// as nothing but the error. The command reads the body straight into the document; tests
/// give JSON.
#[cfg(test)]
fn render_status(v: &Value, now: SystemTime) -> String {
    match <Status as serde::Deserialize>::deserialize(v) {
        Ok(doc) => render(&doc, now),
        Err(e) => format!("not a status document: {e}\n"),
    }
}

/// Any field of the document as [`s`] shows its JSON.
fn sv<T: serde::Serialize>(x: &T) -> String {
    s(&serde_json::to_value(x).unwrap_or(Value::Null))
}

/// `text`, or `?` when the document left it out.
fn or_unknown(text: &str) -> &str {
    if text.is_empty() {
        "?"
    } else {
        text
    }
}

/// The `/status` document as tables: the header (site, generation, reload, zones), anycast
/// and fleet when present, drains in force, then services, regions and every endpoint.
pub fn render(v: &Status, now: SystemTime) -> String {
    let mut out = String::new();
    let mut head = Vec::new();
    head.push(vec![
        "site".into(),
        v.site.as_deref().unwrap_or("(no site id)").to_string(),
    ]);
    head.push(vec![
        "version".into(),
        format!("meridian {}", or_unknown(&v.version)),
    ]);
    let loaded = or_unknown(&v.loaded_at);
    head.push(vec![
        "generation".into(),
        format!("{}, loaded {loaded} ({})", v.generation, ago(loaded, now)),
    ]);
    if let Some(c) = &v.config_path {
        head.push(vec!["config".into(), c.clone()]);
    }
    head.push(vec![
        "last reload".into(),
        match &v.last_reload {
            None => "none since start".into(),
            Some(reload) if reload.ok => {
                let at = or_unknown(&reload.at);
                format!(
                    "ok, generation {} at {at} ({})",
                    sv(&reload.generation),
                    ago(at, now)
                )
            }
            Some(reload) => {
                let at = or_unknown(&reload.at);
                let first = reload
                    .error
                    .as_deref()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("");
                format!("REJECTED at {at} ({}): {first}", ago(at, now))
            }
        },
    ]);
    let zones: Vec<String> = v
        .zones
        .iter()
        .map(|z| match z.loaded {
            false => format!("{} NOT LOADED (SERVFAIL)", z.name),
            true => match &z.dnssec {
                None => format!("{} ({} records)", sv(&z.origin), sv(&z.records)),
                Some(d) => format!(
                    "{} ({} records, signed: keys {}, RRSIGs valid until {})",
                    sv(&z.origin),
                    sv(&z.records),
                    d.keys
                        .iter()
                        .map(|k| format!("{}/{}/{}", k.tag, k.algorithm, k.flags))
                        .collect::<Vec<_>>()
                        .join(" "),
                    d.expiration
                ),
            },
        })
        .collect();
    head.push(vec![
        "zones".into(),
        if zones.is_empty() {
            "-".into()
        } else {
            zones.join(", ")
        },
    ]);
    for (key, x) in [("anycast", &v.anycast), ("fleet", &v.fleet)] {
        if let Some(x) = x.as_ref().filter(|x| !x.is_null()) {
            head.push(vec![key.into(), fields(x, now)]);
        }
    }
    if let Some(ifaces) = v.xdp.as_array().filter(|a| !a.is_empty()) {
        head.push(vec!["xdp".into(), xdp_words(ifaces)]);
    }
    out.push_str(&table(&head, ""));

    if !v.drains_state.ok {
        out.push_str(&format!(
            "\nDRAIN STATE LOST: {} (drains made before the restart are unknown until an \
             operator drains or undrains)\n",
            v.drains_state.error.as_deref().unwrap_or("?")
        ));
    }
    if !v.drains.is_empty() {
        out.push_str("\ndrains (kept across reloads and restarts)\n");
        let rows: Vec<Vec<String>> = v
            .drains
            .iter()
            .map(|d| {
                let scope = &d.rule.scope;
                let what = match (&scope.endpoint, &scope.region) {
                    (Some(e), _) => format!("endpoint {e}"),
                    (None, Some(r)) => format!("region {r}"),
                    _ => "?".into(),
                };
                let service = scope.service.as_deref().unwrap_or("every service");
                let at = or_unknown(&d.rule.at);
                let partial = d.rule.share.filter(|_| d.rule.drain);
                vec![
                    match (d.rule.drain, partial) {
                        (true, Some(_)) => "partly".into(),
                        (true, None) => "drained".into(),
                        (false, _) => "undrained".into(),
                    },
                    match partial {
                        // "region eu-west drained 25 %": the share of client networks moved.
                        Some(s) => format!("{what} drained {}", share_words(s)),
                        None => what,
                    },
                    service.to_string(),
                    format!("since {at} ({})", ago(at, now)),
                    match d.matches {
                        Some(0) => "MATCHES NOTHING (undrain it with the same words)".into(),
                        Some(n) => format!("{n} endpoint(s)"),
                        None => String::new(),
                    },
                ]
            })
            .collect();
        out.push_str(&table(&rows, "  "));
    }

    let services = &v.services;
    let mut svc_rows = vec![vec![
        "SERVICE".to_string(),
        "POLICY".into(),
        "TTL".into(),
        "HEALTH".into(),
        "WHEN ALL DOWN".into(),
        "UP".into(),
    ]];
    // region → hosts (addresses), and those up, unhealthy, drained in at least one service:
    // a host in three services is one machine, not three.
    let mut regions: BTreeMap<String, [std::collections::BTreeSet<String>; 4]> = BTreeMap::new();
    let endpoints: Vec<(&status::Service, &status::Endpoint)> = services
        .iter()
        .flat_map(|svc| svc.endpoints.iter().map(move |e| (svc, e)))
        .collect();
    let has_share = endpoints.iter().any(|(_, e)| answer_share(e).is_some());
    let has_fleet = endpoints.iter().any(|(_, e)| e.fleet.is_some());
    for svc in services {
        let eps = svc.endpoints.len();
        svc_rows.push(vec![
            svc.name.clone(),
            svc.policy.clone(),
            svc.ttl.to_string(),
            svc.health.as_deref().unwrap_or("(none)").to_string(),
            svc.when_all_down.clone(),
            format!("{}/{eps}", svc.endpoints_up),
        ]);
    }
    let mut ep_rows = vec![vec![
        "SERVICE".to_string(),
        "ENDPOINT".into(),
        "REGION".into(),
        "STATE".into(),
        "HEALTH".into(),
        "DRAIN".into(),
        "LAST PROBE".into(),
        "RTT".into(),
        "LOAD".into(),
    ]];
    if has_share {
        ep_rows[0].push("SHARE".into());
    }
    if has_fleet {
        ep_rows[0].push("FLEET".into());
    }
    for (svc, e) in &endpoints {
        let (healthy, drained) = (e.healthy, e.drained);
        let region = e.region.as_deref().unwrap_or("-").to_string();
        let r = regions.entry(region.clone()).or_default();
        let host = e.address.clone();
        r[0].insert(host.clone());
        if healthy && !drained {
            r[1].insert(host.clone());
        }
        if !healthy {
            r[2].insert(host.clone());
        }
        if drained {
            r[3].insert(host);
        }
        let probed = e.probe.is_some();
        let last = match &e.last_probe {
            Some(p) => {
                let at = or_unknown(&p.at);
                // A long reason (a connect error's OS text) would stretch every row;
                // `--json` has it whole.
                let reason = or_unknown(&p.reason);
                let short: String = if reason.chars().count() > 24 {
                    reason.chars().take(23).chain(['…']).collect()
                } else {
                    reason.to_string()
                };
                format!("{short} {}", ago(at, now))
            }
            None if probed => "not yet".into(),
            None => "no check".into(),
        };
        let mut row = vec![
            svc.name.clone(),
            e.address.clone(),
            region,
            if drained {
                "DRAINED"
            } else if healthy {
                "UP"
            } else {
                "DOWN"
            }
            .into(),
            // Several profiles: which decided (`down (tls)`, `up (web+tls)`).
            if e.checks.len() > 1 {
                let by: Vec<&str> = e
                    .checks
                    .iter()
                    .filter(|c| c.decided)
                    .map(|c| c.profile.as_str())
                    .collect();
                format!("{} ({})", if healthy { "up" } else { "down" }, by.join("+"))
            } else {
                if healthy { "up" } else { "down" }.into()
            },
            match (drained, e.drain_share) {
                (true, _) => "drained".into(),
                (false, Some(s)) => format!("drained {}", share_words(s)),
                (false, None) => "-".into(),
            },
            last,
            ms(&serde_json::to_value(e.rtt_ms).unwrap_or(Value::Null)),
            sv(&e.load),
        ];
        if has_share {
            row.push(answer_share(e).map_or("-".into(), share));
        }
        if has_fleet {
            let f = e.fleet.as_ref().unwrap_or(&Value::Null);
            row.push(if f.is_object() {
                format!(
                    "{}/{} sites healthy: {}",
                    s(&f["healthy_sites"]),
                    s(&f["reporting_sites"]),
                    if f["healthy"].as_bool() == Some(true) {
                        "up"
                    } else {
                        "down"
                    }
                )
            } else {
                s(f)
            });
        }
        ep_rows.push(row);
    }
    if services.is_empty() {
        out.push_str("\nno balanced services\n");
        return out;
    }
    out.push('\n');
    out.push_str(&table(&svc_rows, ""));
    // Tiers: the order a service tries them in, and the one answering now.
    if services.iter().any(|s| !s.tiers.is_empty()) {
        let mut rows = vec![vec![
            "SERVICE".to_string(),
            "TIER".into(),
            "POLICY".into(),
            "POOLS".into(),
            "UP".into(),
            "MIN UP".into(),
            "ANSWERING".into(),
        ]];
        for svc in services.iter().filter(|s| !s.tiers.is_empty()) {
            for t in &svc.tiers {
                rows.push(vec![
                    svc.name.clone(),
                    t.tier.to_string(),
                    t.policy.clone(),
                    if t.pools.is_empty() {
                        "-".into()
                    } else {
                        t.pools.join(",")
                    },
                    format!("{}/{}", t.endpoints_up, t.endpoints),
                    t.min_up.to_string(),
                    if t.answering { "yes" } else { "-" }.into(),
                ]);
            }
            if !svc.fallback.is_empty() {
                rows.push(vec![
                    svc.name.clone(),
                    "fallback".into(),
                    "-".into(),
                    svc.fallback.join(","),
                    "-".into(),
                    "-".into(),
                    if svc.tiers.iter().any(|t| t.answering) {
                        "-"
                    } else {
                        "yes"
                    }
                    .into(),
                ]);
            }
        }
        out.push('\n');
        out.push_str(&table(&rows, ""));
    }
    let mut reg_rows = vec![vec![
        "REGION".to_string(),
        "HOSTS".into(),
        "UP".into(),
        "UNHEALTHY".into(),
        "DRAINED".into(),
    ]];
    for (name, c) in &regions {
        reg_rows.push(vec![
            name.clone(),
            c[0].len().to_string(),
            c[1].len().to_string(),
            c[2].len().to_string(),
            c[3].len().to_string(),
        ]);
    }
    out.push('\n');
    out.push_str(&table(&reg_rows, ""));
    out.push('\n');
    out.push_str(&table(&ep_rows, ""));
    out
}

/// `[server] xdp` as a line: each interface answering over AF_XDP, its queues and mode, and
/// what it answered and dropped since start.
fn xdp_words(ifaces: &[Value]) -> String {
    ifaces
        .iter()
        .map(|i| {
            format!(
                "{}: {} queue(s), {} {}, {} answered, {} dropped",
                s(&i["interface"]),
                s(&i["queues"]),
                s(&i["mode"]),
                s(&i["copy"]),
                s(&i["answered"]),
                s(&i["dropped"]),
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// An endpoint's share of its service's answers over the last minute (`share_1m`, sampled
/// once a second by the server's history).
fn answer_share(e: &status::Endpoint) -> Option<&Value> {
    e.share_1m.as_ref().filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_show_what_status_has_and_what_others_add() {
        let now = humantime::parse_rfc3339("2025-01-01T12:00:10Z").unwrap();
        let v = json!({
            "site": "fra1", "version": "0.1.0", "generation": 3,
            "loaded_at": "2025-01-01T12:00:00.000Z", "last_reload": null,
            "zones": [{"origin": "example.com.", "records": 9}],
            "anycast": {"announced": true, "reason": "self-check", "since": "2025-01-01T11:00:10Z"},
            "drains": [{"drain": true, "region": "eu-west", "at": "2025-01-01T12:00:05Z"}],
            "services": [{"name": "www.example.com", "policy": "geo", "ttl": 30, "health": "web",
                "when_all_down": "serve-all", "endpoints_up": 1, "endpoints": [
                {"address": "192.0.2.10", "region": "us-east", "healthy": true, "drained": false,
                 "probe": "profile:web", "rtt_ms": 0.42, "load": null, "share_1m": 0.75,
                 "last_probe": {"reason": "ok", "at": "2025-01-01T12:00:09Z"}},
                {"address": "192.0.2.20", "region": "eu-west", "healthy": false, "drained": true,
                 "probe": "profile:web", "rtt_ms": null, "load": 0.5, "last_probe": null}]}]
        });
        let t = render_status(&v, now);
        for want in [
            "site         fra1",
            "generation   3, loaded 2025-01-01T12:00:00.000Z (10s ago)",
            "anycast      announced yes, reason self-check, since 2025-01-01T11:00:10Z (60m ago)",
            "drained  region eu-west  every service  since 2025-01-01T12:00:05Z (5.0s ago)",
            "www.example.com  geo     30   web     serve-all      1/2",
            "eu-west  1      0   1          1",
            "192.0.2.10  us-east  UP       up      -        ok 1.0s ago  0.42ms  -     75.0%",
            "192.0.2.20  eu-west  DRAINED  down    drained  not yet      -       0.5   -",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        assert!(!t.contains("FLEET"), "{t}");
        assert!(!t.contains("xdp"), "no xdp line without [server] xdp:\n{t}");
    }

    #[test]
    fn status_shows_the_interfaces_answering_over_af_xdp() {
        let now = humantime::parse_rfc3339("2025-01-01T12:00:10Z").unwrap();
        let v = json!({
            "site": "fra1", "version": "0.1.0", "generation": 1,
            "loaded_at": "2025-01-01T12:00:00.000Z", "last_reload": null, "zones": [],
            "services": [], "drains": [],
            "xdp": [{"interface": "eth0", "queues": 4, "mode": "native", "copy": "copy",
                     "answered": 1234, "dropped": 5}]
        });
        let t = render_status(&v, now);
        assert!(
            t.contains("xdp          eth0: 4 queue(s), native copy, 1234 answered, 5 dropped"),
            "{t}"
        );
    }
}
