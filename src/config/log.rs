//! `[log]`: its schema, and parsing and checking its values (format, queries, dnstap), for the
//! config's checks and the query log (`crate::querylog`, which re-exports them).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_spanned::Spanned;

use super::{Cx, Problem};

/// `[log]`: values as written, checked here and read by `crate::querylog`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`, for every log line (needs a restart).
    pub format: Option<Spanned<String>>,
    /// `off`, `all` or `sample:N`.
    pub queries: Option<Spanned<String>>,
    /// `unix:PATH` or `file:PATH`.
    pub dnstap: Option<Spanned<String>>,
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// `[log] dnstap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnstapTarget {
    /// A collector listening on a unix socket (bidirectional Frame Streams).
    Unix(PathBuf),
    /// A file (uni-directional Frame Streams: START, frames, STOP).
    File(PathBuf),
}

pub fn parse_format(s: &str) -> Result<Format, String> {
    match s {
        "text" => Ok(Format::Text),
        "json" => Ok(Format::Json),
        _ => Err(format!(
            "log.format: `{s}` is not one of \"text\", \"json\""
        )),
    }
}

/// `off` → 0, `all` → 1, `sample:N` → N.
pub fn parse_queries(s: &str) -> Result<u32, String> {
    match s {
        "off" => Ok(0),
        "all" => Ok(1),
        _ => match s.strip_prefix("sample:").map(str::parse::<u32>) {
            Some(Ok(n)) if n >= 1 => Ok(n),
            _ => Err(format!(
                "log.queries: `{s}` is not \"off\", \"all\" or \"sample:N\" with N at least 1"
            )),
        },
    }
}

/// `unix:PATH` or `file:PATH`; a relative path is taken from the config's folder.
pub fn parse_dnstap(s: &str, config_dir: &Path) -> Result<DnstapTarget, String> {
    let (kind, path) = s.split_once(':').unwrap_or(("", ""));
    if path.is_empty() || !matches!(kind, "unix" | "file") {
        return Err(format!(
            "log.dnstap: `{s}` is not \"unix:/path/to/socket\" or \"file:/path/to/file\""
        ));
    }
    let path = config_dir.join(path);
    Ok(match kind {
        "unix" => DnstapTarget::Unix(path),
        _ => DnstapTarget::File(path),
    })
}

/// Checks `[log]`; a relative dnstap path is taken from the config's folder.
pub fn check(log: &LogConfig, cx: &Cx, out: &mut Vec<Problem>) {
    let config_dir = cx.path().parent().unwrap_or(Path::new("."));
    if let Some(f) = &log.format {
        if let Err(e) = parse_format(f.get_ref()) {
            out.push(cx.at(f.span(), e));
        }
    }
    if let Some(q) = &log.queries {
        if let Err(e) = parse_queries(q.get_ref()) {
            out.push(cx.at(q.span(), e));
        }
    }
    if let Some(d) = &log.dnstap {
        if let Err(e) = parse_dnstap(d.get_ref(), config_dir) {
            out.push(cx.at(d.span(), e));
        }
    }
}
