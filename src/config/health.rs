//! `[health.NAME]`: probe profiles a service names in `health`, and [`HealthRef`], how a
//! service (and a pool) names them: one profile or a list, with `health_min`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::{parse_duration, Cx, Problem};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthProfile {
    pub kind: Spanned<String>,
    pub path: Option<String>,
    pub port: Option<u16>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<u32>>,
    pub fall: Option<Spanned<u32>>,
    pub expect_status: Option<Spanned<StatusSpec>>,
    pub expect_body: Option<String>,
    pub host: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub tls_verify: Option<bool>,
    pub initial: Option<Spanned<String>>,
    /// The local address probes leave from (bind before connect).
    pub source: Option<Spanned<String>>,
    /// `exec`: the program and its arguments, run without a shell (`{address}`, `{port}`).
    pub command: Option<Spanned<Vec<String>>>,
    /// `push`: how long a pushed state holds; default 3 × interval.
    pub expire: Option<Spanned<String>>,
}

/// The profile kinds.
pub const KINDS: &[&str] = &["http", "https", "tcp", "exec", "push"];

/// The placeholders an `exec` command may use.
pub const EXEC_PLACEHOLDERS: &[&str] = &["address", "port"];

/// `health = "web"` or `health = ["web", "tls"]`, as written on a service (or a pool): the
/// profiles that check its endpoints. One type for every place that names profiles, so a
/// list means the same everywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRef(pub Vec<String>);

impl HealthRef {
    pub fn names(&self) -> &[String] {
        &self.0
    }
    /// How people read it: `web`, or `web, tls`.
    pub fn display(&self) -> String {
        self.0.join(", ")
    }
    /// The profiles that must pass for an endpoint to be up: `health_min`, or all of them.
    pub fn min(&self, health_min: Option<u32>) -> usize {
        let n = self.0.len();
        health_min.map_or(n, |m| (m as usize).clamp(1, n.max(1)))
    }
}

impl<'de> Deserialize<'de> for HealthRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HealthRef, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HealthRef;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a profile name or a list of profile names")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HealthRef, E> {
                Ok(HealthRef(vec![v.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<HealthRef, A::Error> {
                let mut out = Vec::new();
                while let Some(n) = a.next_element::<String>()? {
                    out.push(n);
                }
                Ok(HealthRef(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Checks a `health` list and its `health_min` (`key` names the table, e.g.
/// `service "www.example.com"`) against the defined profiles.
pub fn check_ref(
    health: &Spanned<HealthRef>,
    health_min: Option<&Spanned<u32>>,
    profiles: &BTreeMap<String, Spanned<HealthProfile>>,
    key: &str,
    cx: &Cx,
    out: &mut Vec<Problem>,
) {
    let names = health.get_ref().names();
    if names.is_empty() {
        out.push(cx.at(
            health.span(),
            format!("{key}.health: the list is empty (leave `health` out for no checks)"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if !profiles.contains_key(n) {
            out.push(cx.at(
                health.span(),
                format!("{key}.health: no health profile `{n}` is defined"),
            ));
        }
        if !seen.insert(n) {
            out.push(cx.at(
                health.span(),
                format!("{key}.health: profile `{n}` is listed twice"),
            ));
        }
    }
    if let Some(m) = health_min {
        let v = *m.get_ref() as usize;
        if v == 0 || v > names.len() {
            out.push(cx.at(
                m.span(),
                format!(
                    "{key}.health_min: must be between 1 and the number of profiles in `health` ({})",
                    names.len()
                ),
            ));
        }
    }
}

/// `health_min` without `health`.
pub fn check_min_alone(health_min: &Spanned<u32>, key: &str, cx: &Cx, out: &mut Vec<Problem>) {
    out.push(cx.at(
        health_min.span(),
        format!("{key}.health_min: there is no `health` list for it to count"),
    ));
}

/// `expect_status` as written: one code, a range string, or a list of either.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StatusSpec {
    Code(u16),
    Text(String),
    List(Vec<StatusSpec>),
}

/// Checks every `[health.NAME]` profile.
pub fn check(health: &BTreeMap<String, Spanned<HealthProfile>>, cx: &Cx, out: &mut Vec<Problem>) {
    for (name, profile) in health {
        let key = format!("health.{name}");
        let p = profile.get_ref();
        let kind = p.kind.get_ref().as_str();
        if !KINDS.contains(&kind) {
            out.push(cx.at(
                p.kind.span(),
                format!(
                    "{key}.kind: `{}` is not one of {}",
                    p.kind.get_ref(),
                    KINDS.join(", ")
                ),
            ));
        }
        check_kind_keys(&key, kind, profile, cx, out);
        if p.kind.get_ref() == "tcp" && p.port.is_none() {
            out.push(cx.at(
                profile.span(),
                format!("{key}.port: a tcp check needs a port"),
            ));
        }
        for (k, d) in [("interval", &p.interval), ("timeout", &p.timeout)] {
            if let Some(d) = d {
                match parse_duration(d.get_ref()) {
                    // Zero would not mean "never" or "at once": it ran as the default.
                    Ok(v) if v.is_zero() => {
                        out.push(cx.at(d.span(), format!("{key}.{k}: must be more than 0")))
                    }
                    Ok(_) => {}
                    Err(e) => out.push(cx.at(d.span(), format!("{key}.{k}: {e}"))),
                }
            }
        }
        for (k, v) in [("rise", &p.rise), ("fall", &p.fall)] {
            if let Some(v) = v {
                if *v.get_ref() == 0 {
                    out.push(cx.at(v.span(), format!("{key}.{k}: must be at least 1")));
                }
            }
        }
        if let Some(s) = &p.expect_status {
            if let Err(e) = status_ranges(s.get_ref()) {
                out.push(cx.at(s.span(), format!("{key}.expect_status: {e}")));
            }
        }
        for (h, v) in &p.headers {
            // RFC 9110 §5.1 token characters; values without control characters.
            let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if h.is_empty() || !h.bytes().all(tchar) {
                out.push(cx.at(
                    profile.span(),
                    format!("{key}.headers: `{h}` is not a valid HTTP header name"),
                ));
            }
            if v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                out.push(cx.at(
                    profile.span(),
                    format!("{key}.headers.{h}: the value has control characters"),
                ));
            }
        }
        if let Some(i) = &p.initial {
            if !["up", "down"].contains(&i.get_ref().as_str()) {
                out.push(cx.at(
                    i.span(),
                    format!("{key}.initial: `{}` is not one of up, down", i.get_ref()),
                ));
            }
        }
        if let Some(src) = &p.source {
            if src.get_ref().parse::<std::net::IpAddr>().is_err() {
                out.push(cx.at(
                    src.span(),
                    format!("{key}.source: `{}` is not an IP address", src.get_ref()),
                ));
            }
        }
    }
}

/// The keys that belong to one kind only: `command` (exec), `expire` (push), and what only a
/// network probe uses; and an exec `command` that can run.
fn check_kind_keys(
    key: &str,
    kind: &str,
    profile: &Spanned<HealthProfile>,
    cx: &Cx,
    out: &mut Vec<Problem>,
) {
    let p = profile.get_ref();
    let net = ["http", "https", "tcp"].contains(&kind);
    if kind != "exec" {
        if let Some(c) = &p.command {
            out.push(cx.at(
                c.span(),
                format!("{key}.command: only an `exec` profile runs a command (kind is `{kind}`)"),
            ));
        }
    }
    if kind != "push" {
        if let Some(e) = &p.expire {
            out.push(cx.at(
                e.span(),
                format!("{key}.expire: only a `push` profile has pushed states to expire (kind is `{kind}`)"),
            ));
        }
    }
    if !net && KINDS.contains(&kind) {
        let unused = [
            ("path", p.path.is_some()),
            ("expect_status", p.expect_status.is_some()),
            ("expect_body", p.expect_body.is_some()),
            ("host", p.host.is_some()),
            ("headers", !p.headers.is_empty()),
            ("tls_verify", p.tls_verify.is_some()),
            ("source", p.source.is_some()),
        ];
        for (k, set) in unused {
            if set {
                out.push(cx.at(
                    profile.span(),
                    format!("{key}.{k}: does not apply to a `{kind}` profile"),
                ));
            }
        }
    }
    if kind == "push" && p.port.is_some() {
        out.push(cx.at(
            profile.span(),
            format!("{key}.port: does not apply to a `push` profile"),
        ));
    }
    if kind == "exec" {
        match &p.command {
            None => out.push(cx.at(
                profile.span(),
                format!("{key}.command: an exec check needs a command, e.g. [\"/usr/local/bin/check\", \"{{address}}\"]"),
            )),
            Some(c) => check_command(key, c, p.port.is_some(), cx, out),
        }
    }
    if let Some(e) = &p.expire {
        match parse_duration(e.get_ref()) {
            Ok(v) if v.is_zero() => {
                out.push(cx.at(e.span(), format!("{key}.expire: must be more than 0")))
            }
            Ok(_) => {}
            Err(err) => out.push(cx.at(e.span(), format!("{key}.expire: {err}"))),
        }
    }
}

/// An exec command: a program given by its absolute path that exists and may be executed
/// (it runs without a shell and without a PATH search), and only known placeholders.
fn check_command(
    key: &str,
    c: &Spanned<Vec<String>>,
    has_port: bool,
    cx: &Cx,
    out: &mut Vec<Problem>,
) {
    let argv = c.get_ref();
    let Some(prog) = argv.first() else {
        out.push(cx.at(
            c.span(),
            format!("{key}.command: is empty; give the program's absolute path first"),
        ));
        return;
    };
    let path = std::path::Path::new(prog);
    if !path.is_absolute() {
        out.push(cx.at(
            c.span(),
            format!(
                "{key}.command: `{prog}` is not an absolute path; exec checks run without a shell \
                 or PATH search, so name the program like \"/usr/local/bin/{prog}\""
            ),
        ));
    } else {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(path) {
            Err(e) => out.push(cx.at(c.span(), format!("{key}.command: cannot run `{prog}`: {e}"))),
            Ok(m) if !m.is_file() => {
                out.push(cx.at(c.span(), format!("{key}.command: `{prog}` is not a file")))
            }
            Ok(m) if m.permissions().mode() & 0o111 == 0 => out.push(cx.at(
                c.span(),
                format!(
                    "{key}.command: `{prog}` is not executable (mode {:o}; chmod +x it)",
                    m.permissions().mode() & 0o7777
                ),
            )),
            Ok(_) => {}
        }
    }
    for arg in argv {
        for name in placeholders(arg) {
            match name {
                Ok(n) if EXEC_PLACEHOLDERS.contains(&n) => {
                    if n == "port" && !has_port {
                        out.push(cx.at(
                            c.span(),
                            format!(
                                "{key}.command: `{{port}}` is used but the profile sets no `port`"
                            ),
                        ));
                    }
                }
                Ok(n) => out.push(cx.at(
                    c.span(),
                    format!(
                        "{key}.command: unknown placeholder `{{{n}}}` (known: {})",
                        EXEC_PLACEHOLDERS
                            .iter()
                            .map(|p| format!("{{{p}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
                Err(()) => out.push(cx.at(
                    c.span(),
                    format!("{key}.command: `{arg}` has a `{{` without its `}}`"),
                )),
            }
        }
    }
}

/// The `{name}` placeholders of one argument, in order; `Err` for a `{` never closed.
pub fn placeholders(arg: &str) -> Vec<Result<&str, ()>> {
    let mut out = Vec::new();
    let mut rest = arg;
    while let Some(i) = rest.find('{') {
        match rest[i..].find('}') {
            Some(j) => {
                out.push(Ok(&rest[i + 1..i + j]));
                rest = &rest[i + j + 1..];
            }
            None => {
                out.push(Err(()));
                break;
            }
        }
    }
    out
}

/// Expands an `expect_status` into inclusive ranges.
pub fn status_ranges(spec: &StatusSpec) -> Result<Vec<(u16, u16)>, String> {
    let check = |c: u16| {
        if (100..=599).contains(&c) {
            Ok(c)
        } else {
            Err(format!("{c} is not an HTTP status code"))
        }
    };
    match spec {
        StatusSpec::Code(c) => Ok(vec![(check(*c)?, *c)]),
        StatusSpec::Text(t) => {
            let t = t.trim();
            let (a, b) = t.split_once('-').unwrap_or((t, t));
            let parse = |x: &str| {
                x.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("`{t}` is not a status code or range like \"200-299\""))
                    .and_then(check)
            };
            let (a, b) = (parse(a)?, parse(b)?);
            if a > b {
                return Err(format!("`{t}`: range start is above its end"));
            }
            Ok(vec![(a, b)])
        }
        StatusSpec::List(items) => {
            let mut out = Vec::new();
            for i in items {
                out.extend(status_ranges(i)?);
            }
            if out.is_empty() {
                return Err("the list is empty".into());
            }
            Ok(out)
        }
    }
}
