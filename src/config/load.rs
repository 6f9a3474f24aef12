//! Reading a config file, also a broken one, as far as it goes (`meridian check`), with every
//! syntax and type error located at `file:line:col` and named by its key path.
//!
//! `check` must report every problem in one run (SPEC "CLI"), but serde stops at the first type
//! error and the TOML parser at the first syntax error. So the text is parsed with the parser's
//! own error recovery, and when the typed read fails, the section that failed is set aside (an
//! optional one removed, a required or referenced one replaced by a harmless stand-in) and the
//! read is tried again, until the rest deserializes. The checks (`check.rs`) then run on that
//! config, and whatever they say about a stand-in is dropped: the section's own error already
//! stands for it. `serve` and reloads still reject such a config whole; only the report is
//! fuller.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::check::check;
use super::service::service_key;
use super::{resolve, Config, LoadedConfig, Problem, Problems};

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map(|nl| before[nl + 1..].chars().count() + 1)
        .unwrap_or(before.chars().count() + 1);
    (line, col)
}

/// Reads and checks a config file. On failure every problem found is returned.
pub fn load(path: &Path) -> Result<LoadedConfig, Problems> {
    examine(path).into_result()
}

/// Parses config text that was read from `path` (used by tests and by [`load`]).
pub fn parse(path: &Path, text: String) -> Result<LoadedConfig, Problems> {
    examine_text(path, text).into_result()
}

/// Everything one read of a config file found.
#[derive(Debug)]
pub struct Examined {
    /// The config as far as it could be made out (with stand-ins for broken sections), or
    /// `None` when the file could not be read or even the stand-ins did not help.
    pub config: Option<LoadedConfig>,
    /// Every problem found in the config, in no particular order.
    pub problems: Vec<Problem>,
    /// The zones folder, if `server.zones` names one that exists, even when the rest of the
    /// config is broken: the zones are worth checking all the same.
    pub zones_dir: Option<PathBuf>,
    /// `file:line:col` of each stand-in; see [`Examined::is_artefact`].
    stand_ins: Vec<(usize, usize)>,
    /// The config file read.
    pub path: PathBuf,
}

impl Examined {
    /// Whether a problem found by a check on [`Examined::config`] is about a stand-in rather
    /// than anything the operator wrote.
    pub fn is_artefact(&self, p: &Problem) -> bool {
        self.path == p.file && self.stand_ins.contains(&(p.line, p.col))
    }

    /// The config, if it has no problem at all (what `serve` and reloads accept).
    pub fn into_result(self) -> Result<LoadedConfig, Problems> {
        match self.config {
            Some(c) if self.problems.is_empty() => Ok(c),
            _ => {
                let mut problems = self.problems;
                sort_problems(&mut problems, &self.path);
                Err(Problems(problems))
            }
        }
    }
}

/// Orders problems by file (the config file first, then the rest by name), line and column,
/// and drops exact repeats, so that output reads top to bottom through each file.
pub fn sort_problems(problems: &mut Vec<Problem>, config: &Path) {
    problems.sort_by(|a, b| {
        let key = |p: &Problem| (p.file != config, p.file.clone(), p.line, p.col);
        key(a).cmp(&key(b))
    });
    // A problem can be found twice (say, by the config's own checks and again by a pass that
    // reads it raw); the report names it once.
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert((p.file.clone(), p.line, p.col, p.message.clone())));
}

/// Reads a config file for [`examine_text`].
pub fn examine(path: &Path) -> Examined {
    match std::fs::read_to_string(path) {
        Ok(text) => examine_text(path, text),
        Err(e) => Examined {
            config: None,
            problems: vec![Problem::new(path, 1, 1, format!("cannot read config: {e}"))],
            zones_dir: None,
            stand_ins: Vec::new(),
            path: path.to_path_buf(),
        },
    }
}

/// Reads config text as far as it goes, collecting every syntax, type and semantic problem.
pub fn examine_text(path: &Path, text: String) -> Examined {
    use toml::de::DeTable;

    let mut problems = Vec::new();
    let (mut table, syntax) = DeTable::parse_recoverable(&text);
    for e in &syntax {
        let (line, col) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((1, 1));
        let mut msg = e.message().trim().to_string();
        // toml says only "duplicate key"; the operator wants to know which.
        if msg == "duplicate key" {
            if let Some(k) = e.span().and_then(|s| text.get(s)).map(str::trim) {
                msg = format!("duplicate key `{}`", k.trim_matches('"'));
            }
        }
        problems.push(Problem::new(path, line, col, msg));
    }
    // Services are named by their `name` in problems, also when their table does not read.
    let service_names: Vec<Option<String>> = match table.get_ref().get("service") {
        Some(v) => match v.get_ref() {
            toml::de::DeValue::Array(a) => a
                .iter()
                .map(|s| {
                    s.get_ref()
                        .as_table()
                        .and_then(|t| t.get("name"))
                        .and_then(|n| n.get_ref().as_str().map(str::to_string))
                })
                .collect(),
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    // Where `server.zones` points, read from the raw table: a broken `[server]` is replaced
    // by a stand-in below, but its zones are still worth checking.
    let raw_zones = table
        .get_ref()
        .get("server")
        .and_then(|s| s.get_ref().get("zones"))
        .and_then(|z| z.get_ref().as_str().map(|s| (s.to_string(), z.span())));

    let mut stand_in_spans: Vec<std::ops::Range<usize>> = Vec::new();
    let mut server_stood_in = false;
    let mut config = None;
    // Each round sets aside one section, so the sections bound the rounds; the cap is a guard.
    for _ in 0..256 {
        let de = toml::de::Deserializer::from(table.clone());
        match serde_path_to_error::deserialize::<_, Config>(de) {
            Ok(c) => {
                config = Some(c);
                break;
            }
            Err(e) => {
                let segments: Vec<String> = e
                    .path()
                    .iter()
                    .filter_map(|s| match s {
                        serde_path_to_error::Segment::Map { key }
                            if key != "$__serde_spanned_private_value" =>
                        {
                            Some(key.clone())
                        }
                        serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                        _ => None,
                    })
                    .collect();
                let (problem, located) = type_problem(path, &text, e, &service_names);
                // The parser's recovery from a syntax error can leave a document whose shape
                // is wrong as a whole: a section gone, or the keys of a broken `[table]`
                // header landing at the top level. Errors about the document's top level
                // then only repeat the syntax error.
                if syntax.is_empty() || (located && segments.len() > 1) {
                    problems.push(problem);
                }
                let set_aside = set_aside(table.get_mut(), &segments, &mut stand_in_spans);
                match set_aside {
                    SetAside::No => break,
                    SetAside::Server => server_stood_in = true,
                    SetAside::Yes => {}
                }
            }
        }
    }

    let stand_ins = stand_in_spans
        .iter()
        .map(|s| line_col(&text, s.start))
        .collect();
    let mut zones_dir = None;
    if server_stood_in {
        if let Some((z, span)) = &raw_zones {
            let dir = resolve(path, z);
            if dir.is_dir() {
                zones_dir = Some(dir);
            } else {
                let (line, col) = line_col(&text, span.start);
                problems.push(Problem::new(
                    path,
                    line,
                    col,
                    format!("server.zones: `{}` is not a folder", dir.display()),
                ));
            }
        }
    }
    let Some(config) = config else {
        return Examined {
            config: None,
            problems,
            zones_dir,
            stand_ins,
            path: path.to_path_buf(),
        };
    };
    let mut loaded = LoadedConfig {
        path: path.to_path_buf(),
        zones_dir: resolve(path, config.server.zones.get_ref()),
        geoip_databases: config
            .geoip
            .as_ref()
            .and_then(|g| g.database.as_ref())
            .map(|d| {
                super::geoip::database_list(d.get_ref())
                    .unwrap_or_default()
                    .iter()
                    .map(|f| resolve(path, f))
                    .collect()
            })
            .unwrap_or_default(),
        text,
        listen: Vec::new(),
        tcp_idle_timeout: Duration::from_secs(10),
        anycast: None,
        rrl: None,
        cookie_secret: None,
        fleet: None,
        config,
    };
    let mut examined = Examined {
        config: None,
        problems: Vec::new(),
        zones_dir,
        stand_ins,
        path: path.to_path_buf(),
    };
    let mut semantic = Vec::new();
    check(&mut loaded, &mut semantic);
    if !server_stood_in && loaded.zones_dir.is_dir() {
        examined.zones_dir = Some(loaded.zones_dir.clone());
    }
    examined.config = Some(loaded);
    semantic.retain(|p| !examined.is_artefact(p));
    problems.append(&mut semantic);
    examined.problems = problems;
    examined
}

/// A serde error as a problem at its key, with the key path as the operator wrote it, and
/// whether the error had a position of its own (rather than the document's start).
fn type_problem(
    path: &Path,
    text: &str,
    e: serde_path_to_error::Error<toml::de::Error>,
    service_names: &[Option<String>],
) -> (Problem, bool) {
    // Spanned<T> fields add a private segment to serde's path; operators never wrote it.
    let mut key = e
        .path()
        .to_string()
        .replace(".$__serde_spanned_private_value", "");
    // `service[0]` is the service the operator calls by its name.
    if let Some(rest) = key.strip_prefix("service[") {
        if let Some((i, tail)) = rest.split_once(']') {
            if let Some(Some(name)) = i.parse::<usize>().ok().and_then(|i| service_names.get(i)) {
                key = format!("{}{tail}", service_key(name));
            }
        }
    }
    let inner = e.into_inner();
    let located = inner.span().is_some_and(|s| s.start > 0);
    let (line, col) = inner
        .span()
        .map(|s| line_col(text, s.start))
        .unwrap_or((1, 1));
    // serde's messages quote the offending value ("invalid type: integer `123`"); for the
    // token that value is the secret, and this message reaches logs and /status.
    let msg = if key == "admin.token" {
        "must be a string".to_string()
    } else {
        toml_words(inner.message().trim())
    };
    let msg = if key.is_empty() || key == "." {
        msg
    } else {
        format!("{key}: {msg}")
    };
    (Problem::new(path, line, col, msg), located)
}

/// serde's type errors in TOML's words: `invalid type: string "30", expected u32` becomes
/// `expected an integer, found a string`.
fn toml_words(msg: &str) -> String {
    fn kind(rust: &str) -> String {
        let r = rust.trim();
        let ints = [
            "u8", "u16", "u32", "u64", "usize", "i8", "i16", "i32", "i64", "isize",
        ];
        if ints.contains(&r) || r.starts_with("integer") {
            "an integer".into()
        } else if r == "f32" || r == "f64" || r.starts_with("floating point") {
            "a number".into()
        } else if r.starts_with("string") || r == "a string" || r == "a borrowed string" {
            "a string".into()
        } else if r.starts_with("boolean") || r == "a boolean" {
            "a boolean (true or false)".into()
        } else if r.starts_with("sequence") || r == "a sequence" || r.starts_with("an array") {
            "an array".into()
        } else if r.starts_with("map") || r == "a map" || r.starts_with("struct ") {
            "a table".into()
        } else {
            r.to_string()
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.rsplit_once(", expected ") {
            return format!("expected {}, found {}", kind(expected), kind(found));
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid value: ") {
        if let Some((found, expected)) = rest.rsplit_once(", expected ") {
            let bits = expected.trim().trim_start_matches(['u', 'i']);
            if let Ok(bits) = bits.parse::<u32>() {
                let (lo, hi) = if expected.trim().starts_with('u') {
                    (0i128, (1i128 << bits) - 1)
                } else {
                    (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
                };
                return format!("{found} is out of range: expected an integer from {lo} to {hi}");
            }
        }
    }
    msg.to_string()
}

enum SetAside {
    /// Nothing more could be set aside; the typed read gives up.
    No,
    Yes,
    /// `[server]` was replaced by a stand-in.
    Server,
}

/// Sets aside the section at the start of a failed key path. Sections that others refer to by
/// name (`[health.x]`, `[regions.x]`, `[pool.x]`) and each `[[service]]` (whose index names it in every
/// message) are replaced by stand-ins where they were; anything else is optional and removed.
fn set_aside(
    table: &mut toml::de::DeTable<'_>,
    segments: &[String],
    stand_in_spans: &mut Vec<std::ops::Range<usize>>,
) -> SetAside {
    // Stand-ins that pass every check; what the checks say about them is dropped anyway.
    const SERVER: &str = "listen = []\nzones = \"\"\n";
    const HEALTH: &str = "kind = \"http\"\n";
    const REGION: &str = "";
    const POOL: &str = "endpoints = [{ address = \"192.0.2.1\" }]\n";
    const SERVICE: &str =
        "name = \"stand-in.invalid.\"\npolicy = \"round-robin\"\nendpoints = [{ address = \"192.0.2.1\" }]\n";

    let Some(top) = segments.first() else {
        // A problem with the document as a whole: only a missing `[server]` can be helped.
        if table.contains_key("server") {
            return SetAside::No;
        }
        table.insert(
            serde_spanned::Spanned::new(0..0, "server".into()),
            stand_in(SERVER, 0..0),
        );
        stand_in_spans.push(0..0);
        return SetAside::Server;
    };
    let Some((key, value)) = table.get_key_value(top.as_str()) else {
        return SetAside::No;
    };
    let (key, span) = (key.clone(), value.span());
    match (top.as_str(), segments.get(1)) {
        ("server", _) => {
            if stand_in_spans.contains(&span) {
                return SetAside::No; // the stand-in itself failed: nothing left to try
            }
            table.insert(key, stand_in(SERVER, span.clone()));
            stand_in_spans.push(span);
            SetAside::Server
        }
        (section @ ("health" | "regions" | "pool"), Some(name)) => {
            let Some(entries) = table.get_mut(section).and_then(|v| match v.get_mut() {
                toml::de::DeValue::Table(t) => Some(t),
                _ => None,
            }) else {
                return SetAside::No;
            };
            let Some((k, v)) = entries.get_key_value(name.as_str()) else {
                return SetAside::No;
            };
            let (k, span) = (k.clone(), v.span());
            if stand_in_spans.contains(&span) {
                return SetAside::No;
            }
            let text = match section {
                "health" => HEALTH,
                "pool" => POOL,
                _ => REGION,
            };
            entries.insert(k, stand_in(text, span.clone()));
            stand_in_spans.push(span);
            SetAside::Yes
        }
        ("service", Some(index)) => {
            let Some(list) = table.get_mut("service").and_then(|v| match v.get_mut() {
                toml::de::DeValue::Array(a) => Some(a),
                _ => None,
            }) else {
                return SetAside::No;
            };
            let Some(slot) = index.parse::<usize>().ok().and_then(|i| list.get_mut(i)) else {
                return SetAside::No;
            };
            let span = slot.span();
            if stand_in_spans.contains(&span) {
                return SetAside::No;
            }
            *slot = stand_in(SERVICE, span.clone());
            stand_in_spans.push(span);
            SetAside::Yes
        }
        // Optional sections (and keys that are not part of the schema at all) go entirely.
        _ => {
            table.remove(top.as_str());
            SetAside::Yes
        }
    }
}

/// Parses a stand-in table and places every part of it at `span`, so that whatever a check
/// says about it is recognised as being about the stand-in.
fn stand_in<'i>(
    text: &'static str,
    span: std::ops::Range<usize>,
) -> serde_spanned::Spanned<toml::de::DeValue<'i>> {
    fn respan<'i>(
        v: serde_spanned::Spanned<toml::de::DeValue<'i>>,
        span: &std::ops::Range<usize>,
    ) -> serde_spanned::Spanned<toml::de::DeValue<'i>> {
        use toml::de::DeValue;
        let v = match v.into_inner() {
            DeValue::Table(t) => {
                DeValue::Table(t.into_iter().map(|(k, v)| (k, respan(v, span))).collect())
            }
            DeValue::Array(a) => DeValue::Array(a.into_iter().map(|v| respan(v, span)).collect()),
            other => other,
        };
        serde_spanned::Spanned::new(span.clone(), v)
    }
    let table = toml::de::DeTable::parse(text)
        .map(|t| t.into_inner())
        .unwrap_or_default();
    respan(
        serde_spanned::Spanned::new(span.clone(), toml::de::DeValue::Table(table)),
        &span,
    )
}
