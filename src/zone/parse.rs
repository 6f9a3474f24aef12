//! RFC 1035 master-file reader with positions.
//!
//! hickory-proto has a zone parser, but its errors carry no line numbers and its per-type rdata
//! parsers are crate-private, so this module tokenizes the file itself (keeping line and column
//! for every token) and builds hickory `RData` values: directly for the common types, through
//! the RFC 3597 `\# len hex` form for any type, and through hickory's parser, one record at a
//! time, for the rarer types it knows.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hickory_proto::rr::rdata::{self, CNAME, MX, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, Restrict};

use crate::base::problem::Problem;

/// One record as read, with where it came from.
#[derive(Debug, Clone)]
pub struct ParsedRecord {
    pub record: Record,
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone)]
struct Token {
    text: String,
    quoted: bool,
    line: usize,
    col: usize,
}

/// One logical entry (a line, or several joined by parentheses).
#[derive(Debug)]
struct Entry {
    starts_blank: bool,
    tokens: Vec<Token>,
    line: usize,
    /// Why the lexer could not read this entry whole; its tokens are what came before.
    bad: Option<Problem>,
}

const MAX_INCLUDE_DEPTH: usize = 8;

/// Reads an `$INCLUDE`d file: a regular file only (following symlinks), never a device such
/// as `/dev/zero` (endless), a FIFO (blocks forever), a directory or a socket. The file is
/// opened without blocking and its type checked on the open handle, so a file swapped for a
/// FIFO between a check and the open cannot hang the loader. Errors name the file and the
/// reason, never its content.
fn read_include(p: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let kind = |m: &std::fs::Metadata| {
        use std::os::unix::fs::FileTypeExt;
        let t = m.file_type();
        if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        }
    };
    let meta = std::fs::metadata(p).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(format!(
            "it is {}; only regular files are included",
            kind(&meta)
        ));
    }
    let mut f = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(format!(
            "it is {}; only regular files are included",
            kind(&meta)
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0).min(1 << 30));
    f.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    // Not `from_utf8`'s error: it says nothing of the content either, but be plain.
    String::from_utf8(bytes).map_err(|_| "not a text file (not UTF-8)".to_string())
}

/// Splits master-file text into entries. Escapes are kept in the token text (names and
/// character-strings decode them later); quotes are removed and remembered.
///
/// A lexical error spoils only its own entry, which comes back with `bad` set: `check` must
/// list every bad line of a file, so the lexer picks up again where the next entry most
/// likely starts instead of giving up on the rest of the file.
///
/// Entries go to `sink` as they are read (a million-record file is never held as tokens);
/// `sink` returns false to stop.
fn lex(text: &str, file: &Path, sink: &mut dyn FnMut(Entry) -> bool) {
    // Line offsets are needed only to start again after an error that swallowed the rest.
    let mut line_starts = None;
    let mut from = (0, 1);
    while let Some(resume) = lex_from(text, from, &mut line_starts, file, sink) {
        // Each restart begins past the line where the failed round's trouble started, so this
        // loop ends.
        match line_offsets(text, &mut line_starts).get(resume - 1) {
            Some(&at) => from = (at, resume),
            None => return,
        }
    }
}

fn line_offsets<'a>(text: &str, cache: &'a mut Option<Vec<usize>>) -> &'a [usize] {
    cache.get_or_insert_with(|| {
        std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect()
    })
}

/// Lexes from byte `start`, the start of line `first_line` (1-based), to the end, handing
/// entries to `sink`. Returns the line to start again from when an error swallowed the rest
/// of the text (an unclosed quote or parenthesis); the spoiled entry has been handed on with
/// `bad` set. `None` also when `sink` asked to stop.
fn lex_from(
    text: &str,
    (start, first_line): (usize, usize),
    line_starts: &mut Option<Vec<usize>>,
    file: &Path,
    sink: &mut dyn FnMut(Entry) -> bool,
) -> Option<usize> {
    let mut tokens: Vec<Token> = Vec::new();
    let mut starts_blank = false;
    let mut entry_line = first_line;
    let mut paren_depth = 0usize;
    let mut paren_open_at = (0, 0);
    let mut at_line_start = true;
    let mut bad: Option<Problem> = None;

    let mut line = first_line;
    let mut col = 0usize;
    let mut chars = text[start..].chars().peekable();
    while let Some(c) = chars.next() {
        col += 1;
        if at_line_start && paren_depth == 0 {
            at_line_start = false;
            starts_blank = c == ' ' || c == '\t';
            entry_line = line;
        }
        match c {
            '\n' => {
                if paren_depth == 0 {
                    if (!tokens.is_empty() || bad.is_some())
                        && !sink(Entry {
                            starts_blank,
                            tokens: std::mem::take(&mut tokens),
                            line: entry_line,
                            bad: bad.take(),
                        })
                    {
                        return None;
                    }
                    at_line_start = true;
                }
                line += 1;
                col = 0;
            }
            ' ' | '\t' | '\r' => {}
            ';' => skip_to_eol(&mut chars),
            '(' => {
                if paren_depth == 0 {
                    paren_open_at = (line, col);
                }
                paren_depth += 1;
            }
            ')' => {
                if paren_depth == 0 {
                    // The rest of this line belongs to the spoiled entry; the next line is
                    // read as usual.
                    bad = Some(Problem::new(file, line, col, "`)` without a matching `(`"));
                    skip_to_eol(&mut chars);
                } else {
                    paren_depth -= 1;
                }
            }
            '"' => {
                let (tl, tc) = (line, col);
                let mut s = String::new();
                let mut closed = false;
                while let Some(n) = chars.next() {
                    col += 1;
                    match n {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => {
                            s.push('\\');
                            if let Some(e) = chars.next() {
                                col += 1;
                                if e == '\n' {
                                    line += 1;
                                    col = 0;
                                }
                                s.push(e);
                            }
                        }
                        '\n' => {
                            line += 1;
                            col = 0;
                            s.push('\n');
                        }
                        _ => s.push(n),
                    }
                }
                if !closed {
                    // The string ran to the end of the file; the line after the opening quote
                    // is the likeliest start of the next record.
                    let go_on = sink(Entry {
                        starts_blank,
                        tokens,
                        line: entry_line,
                        bad: Some(Problem::new(file, tl, tc, "unterminated quoted string")),
                    });
                    return go_on.then_some(tl + 1);
                }
                tokens.push(Token {
                    text: s,
                    quoted: true,
                    line: tl,
                    col: tc,
                });
            }
            _ => {
                let (tl, tc) = (line, col);
                let mut s = String::new();
                s.push(c);
                if c == '\\' {
                    if let Some(e) = chars.next() {
                        col += 1;
                        s.push(e);
                    }
                }
                while let Some(&n) = chars.peek() {
                    if matches!(n, ' ' | '\t' | '\r' | '\n' | ';' | '(' | ')' | '"') {
                        break;
                    }
                    chars.next();
                    col += 1;
                    s.push(n);
                    if n == '\\' {
                        if let Some(e) = chars.next() {
                            col += 1;
                            s.push(e);
                        }
                    }
                }
                tokens.push(Token {
                    text: s,
                    quoted: false,
                    line: tl,
                    col: tc,
                });
            }
        }
    }
    if paren_depth > 0 {
        let go_on = sink(Entry {
            starts_blank,
            tokens,
            line: entry_line,
            bad: Some(Problem::new(
                file,
                paren_open_at.0,
                paren_open_at.1,
                "`(` is never closed",
            )),
        });
        if !go_on {
            return None;
        }
        // Lines that start blank after the `(` read as its continuation lines; the next line
        // that starts with an owner name (or a directive) is where the next entry begins.
        let line_starts = line_offsets(text, line_starts);
        let resume = (paren_open_at.0 + 1..=line_starts.len()).find(|&l| {
            let from = line_starts[l - 1];
            let rest = &text[from..];
            rest.chars()
                .next()
                .is_some_and(|c| !matches!(c, ' ' | '\t' | '\r' | '\n' | ';' | ')'))
        });
        return resume;
    }
    if !tokens.is_empty() || bad.is_some() {
        sink(Entry {
            starts_blank,
            tokens,
            line: entry_line,
            bad,
        });
    }
    None
}

fn skip_to_eol(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(&n) = chars.peek() {
        if n == '\n' {
            break;
        }
        chars.next();
    }
}

/// Parses a TTL: plain seconds or BIND-style units (1w2d3h4m5s).
/// RFC 2181 §8: a TTL with the top bit set is read as 0 by resolvers, so it is an error
/// here (as `ttl` is in the config), not a silent "do not cache".
fn check_ttl_range(v: u32) -> Result<u32, String> {
    const MAX: u32 = (1 << 31) - 1;
    if v > MAX {
        Err(format!("TTL {v} is above {MAX} (2^31 - 1, RFC 2181 §8)"))
    } else {
        Ok(v)
    }
}

pub fn parse_ttl(s: &str) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    if let Ok(v) = s.parse::<u32>() {
        return Some(v);
    }
    let mut total: u64 = 0;
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(num.unwrap_or(0).checked_mul(10)?.checked_add(d as u64)?);
        } else {
            let mult = match c.to_ascii_lowercase() {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86400,
                'w' => 604800,
                _ => return None,
            };
            total = total.checked_add(num.take()?.checked_mul(mult)?)?;
        }
    }
    if num.is_some() {
        return None;
    }
    u32::try_from(total).ok()
}

/// Decodes a character-string's escapes (`\X`, `\DDD`) into bytes.
fn decode_escapes(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
                let v = (b[i + 1] - b'0') as u32 * 100
                    + (b[i + 2] - b'0') as u32 * 10
                    + (b[i + 3] - b'0') as u32;
                if v > 255 {
                    return Err(format!("escape \\{} is above 255", &s[i + 1..i + 4]));
                }
                out.push(v as u8);
                i += 4;
            } else if i + 1 < b.len() {
                out.push(b[i + 1]);
                i += 2;
            } else {
                return Err("a lone `\\` ends the string".into());
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

struct Ctx<'a> {
    file: &'a Path,
    origin: Name,
    default_ttl: Option<u32>,
    last_ttl: Option<u32>,
    last_owner: Option<Name>,
    /// Where each record goes as soon as it is read, with the zone's apex.
    out: &'a mut dyn FnMut(&Name, ParsedRecord),
    problems: &'a mut Vec<Problem>,
    unread: &'a mut Vec<Unread>,
    /// What the entry being parsed is known to hold so far, for [`Unread`] if it fails.
    head: Unread,
    depth: usize,
}

/// An entry that could not be read, and what it is known to have held: the owner and type
/// when they were read before the error (`None`: could have been anything). The zone checks
/// that report something *missing* (no SOA, no apex NS, an NS target without address) skip
/// what such an entry might have supplied, so one bad line is not reported twice.
#[derive(Debug, Clone, Default)]
pub struct Unread {
    pub owner: Option<Name>,
    pub rtype: Option<RecordType>,
}

impl Unread {
    /// Whether this entry might have been a `rtype` record at `name`.
    pub fn could_be(&self, name: &Name, rtype: RecordType) -> bool {
        self.owner
            .as_ref()
            .is_none_or(|o| o.to_lowercase() == name.to_lowercase())
            && self.rtype.is_none_or(|t| t == rtype)
    }
}

/// Everything read from one zone file, good and bad.
#[derive(Debug)]
pub struct ParsedZone {
    /// The effective origin (see [`parse_zone_file`]).
    pub origin: Name,
    pub records: Vec<ParsedRecord>,
    /// Every bad entry, in file order (an `$INCLUDE`d file's in its place).
    pub problems: Vec<Problem>,
    pub unread: Vec<Unread>,
}

/// More problems than this in one zone file (with its includes) means it is likely not a zone
/// file at all; listing the rest would bury the other files' problems.
const MAX_PROBLEMS: usize = 1000;

/// Stands in for a `$TTL` that could not be read, so the records after it are still checked
/// rather than each reported for the missing TTL. The file is rejected for the `$TTL` anyway.
const STAND_IN_TTL: u32 = 3600;

/// Reads a zone file. `origin` is the origin the file name implies; `$ORIGIN` before the first
/// record replaces it. Returns the effective origin and the records, or every problem found.
pub fn parse_zone_file(
    path: &Path,
    text: &str,
    origin: Name,
) -> Result<(Name, Vec<ParsedRecord>), Vec<Problem>> {
    let z = read_zone_file(path, text, origin);
    if z.problems.is_empty() {
        Ok((z.origin, z.records))
    } else {
        Err(z.problems)
    }
}

/// Reads a zone file to its end whatever it holds: a bad entry is reported and the reader goes
/// on with the next one, so one run lists every bad line (SPEC "CLI": `check`).
pub fn read_zone_file(path: &Path, text: &str, origin: Name) -> ParsedZone {
    let mut records = Vec::new();
    let read = read_zone_stream(path, text, origin, &mut |_, r| records.push(r));
    ParsedZone {
        origin: read.origin,
        records,
        problems: read.problems,
        unread: read.unread,
    }
}

/// What [`read_zone_stream`] found besides the records it handed on.
#[derive(Debug)]
pub struct StreamRead {
    /// The effective origin (see [`parse_zone_file`]).
    pub origin: Name,
    pub problems: Vec<Problem>,
    pub unread: Vec<Unread>,
}

/// [`read_zone_file`], handing each record to `sink` (with the zone's apex, fixed by the first
/// record) as soon as it is read, so that a large zone is built without holding every parsed
/// record at once.
pub fn read_zone_stream(
    path: &Path,
    text: &str,
    origin: Name,
    sink: &mut dyn FnMut(&Name, ParsedRecord),
) -> StreamRead {
    let mut problems = Vec::new();
    let mut unread = Vec::new();
    let mut apex = None;
    {
        let mut cx = Ctx {
            file: path,
            origin,
            default_ttl: None,
            last_ttl: None,
            last_owner: None,
            out: sink,
            problems: &mut problems,
            unread: &mut unread,
            head: Unread::default(),
            depth: 0,
        };
        parse_text(&mut cx, text, &mut apex);
        if apex.is_none() {
            apex = Some(cx.origin.clone());
        }
    }
    StreamRead {
        origin: apex.unwrap_or_else(Name::root),
        problems,
        unread,
    }
}

/// `apex` is fixed by the first record: a later `$ORIGIN` only changes relative names.
fn parse_text(cx: &mut Ctx<'_>, text: &str, apex: &mut Option<Name>) {
    let file = cx.file;
    lex(text, file, &mut |mut entry| {
        if let Some(p) = entry.bad.take() {
            cx.problems.push(p);
            let head = head_of(cx, &entry);
            if head.owner.is_some() {
                cx.last_owner = head.owner.clone();
            }
            cx.unread.push(head);
        } else {
            cx.head = Unread::default();
            if let Err(p) = parse_entry(cx, &entry, apex) {
                cx.problems.push(p);
                cx.unread.push(cx.head.clone());
            }
        }
        if cx.problems.len() >= MAX_PROBLEMS {
            // The problems list is shared with the including file, which stops too without
            // repeating the note.
            if cx.problems.len() == MAX_PROBLEMS {
                let line = cx.problems.last().map_or(1, |p| p.line);
                cx.problems.push(Problem::new(
                    cx.file,
                    line,
                    1,
                    format!("{MAX_PROBLEMS} problems; the rest of this file was not read"),
                ));
                cx.unread.push(Unread::default());
            }
            return false;
        }
        true
    });
}

/// The owner and type of an entry the lexer could not read whole, as far as its tokens show.
fn head_of(cx: &Ctx<'_>, e: &Entry) -> Unread {
    let mut toks = e.tokens.iter();
    let owner = if e.starts_blank {
        cx.last_owner.clone()
    } else {
        match toks.next() {
            Some(t) if t.text.starts_with('$') && !t.quoted => return Unread::default(),
            Some(t) => parse_name(cx, t, "owner").ok(),
            None => None,
        }
    };
    let rtype = toks
        .map(|t| t.text.to_ascii_uppercase())
        .find(|t| !t.as_bytes().first().is_some_and(u8::is_ascii_digit) && t != "IN")
        .and_then(|t| parse_type(&t));
    Unread { owner, rtype }
}

fn parse_name(cx: &Ctx<'_>, tok: &Token, what: &str) -> Result<Name, Problem> {
    let err = |m: String| Problem::new(cx.file, tok.line, tok.col, m);
    if tok.text == "@" {
        return Ok(cx.origin.clone());
    }
    // `""` would otherwise read as the origin (Name::parse of nothing): Knot and BIND reject
    // an empty name, and so do we.
    if tok.text.is_empty() {
        return Err(err(format!(
            "{what} is empty (`\"\"`); write `@` for the origin"
        )));
    }
    let mut n = Name::parse(&tok.text, Some(&cx.origin))
        .map_err(|e| err(format!("{what} `{}` is not a valid name: {e}", tok.text)))?;
    n.set_fqdn(true);
    Ok(n)
}

fn parse_entry(cx: &mut Ctx<'_>, e: &Entry, apex: &mut Option<Name>) -> Result<(), Problem> {
    let first = &e.tokens[0];
    let file = cx.file;
    let at = |t: &Token, m: String| Problem::new(file, t.line, t.col, m);

    if !e.starts_blank && first.text.starts_with('$') && !first.quoted {
        // A directive that fails leaves the records around it uncertain (a wrong origin, an
        // included file never read): it may have stood for anything.
        cx.head = Unread::default();
        let arg = e.tokens.get(1);
        match first.text.to_ascii_uppercase().as_str() {
            "$ORIGIN" => {
                let arg = arg.ok_or_else(|| at(first, "$ORIGIN needs a name".into()))?;
                let mut n = Name::parse(&arg.text, Some(&cx.origin))
                    .map_err(|err| at(arg, format!("$ORIGIN `{}`: {err}", arg.text)))?;
                n.set_fqdn(true);
                cx.origin = n;
            }
            "$TTL" => match arg.map(|a| (a, parse_ttl(&a.text))) {
                Some((a, Some(t))) if check_ttl_range(t).is_err() => {
                    cx.default_ttl = Some(STAND_IN_TTL);
                    return Err(at(a, check_ttl_range(t).unwrap_err()));
                }
                Some((_, Some(t))) => cx.default_ttl = Some(t),
                Some((a, None)) => {
                    cx.default_ttl = Some(STAND_IN_TTL);
                    return Err(at(a, format!("$TTL `{}` is not a TTL", a.text)));
                }
                None => {
                    cx.default_ttl = Some(STAND_IN_TTL);
                    return Err(at(first, "$TTL needs a value".into()));
                }
            },
            "$INCLUDE" => {
                let arg = arg.ok_or_else(|| at(first, "$INCLUDE needs a file name".into()))?;
                if cx.depth >= MAX_INCLUDE_DEPTH {
                    return Err(at(arg, "$INCLUDE nested too deeply".into()));
                }
                let p = Path::new(&arg.text);
                let p = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    cx.file.parent().unwrap_or(Path::new(".")).join(p)
                };
                let text = read_include(&p)
                    .map_err(|err| at(arg, format!("$INCLUDE `{}`: {err}", p.display())))?;
                let saved_origin = cx.origin.clone();
                if let Some(o) = e.tokens.get(2) {
                    cx.origin = parse_name(cx, o, "$INCLUDE origin")?;
                }
                let saved_file = cx.file;
                let mut sub = Ctx {
                    file: &p,
                    origin: cx.origin.clone(),
                    default_ttl: cx.default_ttl,
                    last_ttl: cx.last_ttl,
                    last_owner: cx.last_owner.clone(),
                    out: cx.out,
                    problems: cx.problems,
                    unread: cx.unread,
                    head: Unread::default(),
                    depth: cx.depth + 1,
                };
                parse_text(&mut sub, &text, apex);
                cx.file = saved_file;
                cx.origin = saved_origin;
            }
            other => return Err(at(first, format!("unknown directive `{other}`"))),
        }
        return Ok(());
    }

    let mut i = 0;
    let owner = if e.starts_blank {
        cx.last_owner.clone().ok_or_else(|| {
            at(
                first,
                "record has no owner name and none came before".into(),
            )
        })?
    } else {
        i = 1;
        parse_name(cx, first, "owner")?
    };
    cx.head.owner = Some(owner.clone());
    if apex.is_none() {
        *apex = Some(cx.origin.clone());
    }
    cx.last_owner = Some(owner.clone());

    // [TTL] [CLASS] TYPE, with TTL and class in either order.
    let mut ttl = None;
    let mut class = None;
    let rtype;
    loop {
        let t = e
            .tokens
            .get(i)
            .ok_or_else(|| at(&e.tokens[e.tokens.len() - 1], "record has no type".into()))?;
        i += 1;
        // A quoted empty string is a token with no text (found by fuzzing: it panicked here).
        if ttl.is_none() && t.text.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            let v =
                parse_ttl(&t.text).ok_or_else(|| at(t, format!("`{}` is not a TTL", t.text)))?;
            ttl = Some(check_ttl_range(v).map_err(|m| at(t, m))?);
            continue;
        }
        let upper = t.text.to_ascii_uppercase();
        if class.is_none() {
            match upper.as_str() {
                "IN" => {
                    class = Some((DNSClass::IN, t.clone()));
                    continue;
                }
                "CH" | "CHAOS" | "HS" | "HESIOD" | "CS" | "NONE" | "ANY" => {
                    return Err(at(t, format!("class {upper} is not served; only IN")));
                }
                _ if upper.starts_with("CLASS") && upper[5..].parse::<u16>().is_ok() => {
                    return Err(at(t, format!("class {upper} is not served; only IN")));
                }
                _ => {}
            }
        }
        rtype =
            parse_type(&upper).ok_or_else(|| at(t, format!("unknown record type `{}`", t.text)))?;
        cx.head.rtype = Some(rtype);
        break;
    }
    let type_tok = &e.tokens[i - 1];
    let rdata_toks = &e.tokens[i..];

    let ttl = match ttl {
        Some(t) => {
            cx.last_ttl = Some(t);
            t
        }
        None => match (cx.default_ttl, cx.last_ttl) {
            (Some(t), _) => t,
            (None, Some(t)) => t,
            (None, None) if rtype == RecordType::SOA => {
                // RFC 1035: without $TTL, the SOA's MINIMUM serves as the TTL.
                rdata_toks
                    .get(6)
                    .and_then(|t| parse_ttl(&t.text))
                    .ok_or_else(|| at(type_tok, "record has no TTL and no $TTL is set".into()))?
            }
            (None, None) => {
                return Err(at(type_tok, "record has no TTL and no $TTL is set".into()));
            }
        },
    };

    let rdata = parse_rdata(cx, rtype, type_tok, rdata_toks)?;
    let mut record = Record::from_rdata(owner, ttl, rdata);
    record.dns_class = DNSClass::IN;
    let apex = apex.get_or_insert_with(|| cx.origin.clone());
    (cx.out)(
        apex,
        ParsedRecord {
            record,
            file: cx.file.to_path_buf(),
            line: e.line,
            col: first.col,
        },
    );
    Ok(())
}

fn parse_type(upper: &str) -> Option<RecordType> {
    if let Some(n) = upper.strip_prefix("TYPE") {
        return n.parse::<u16>().ok().map(RecordType::from);
    }
    match RecordType::from_str(upper) {
        Ok(RecordType::Unknown(_)) | Err(_) => None,
        Ok(t) => Some(t),
    }
}

fn parse_rdata(
    cx: &Ctx<'_>,
    rtype: RecordType,
    type_tok: &Token,
    toks: &[Token],
) -> Result<RData, Problem> {
    let file = cx.file;
    let at = |t: &Token, m: String| Problem::new(file, t.line, t.col, m);
    let need = |n: usize| -> Result<(), Problem> {
        if toks.len() < n {
            Err(at(
                toks.last().unwrap_or(type_tok),
                format!("{rtype} needs {n} rdata fields, found {}", toks.len()),
            ))
        } else if toks.len() > n {
            Err(at(
                &toks[n],
                format!("{rtype}: unexpected `{}`", toks[n].text),
            ))
        } else {
            Ok(())
        }
    };
    let num = |t: &Token, what: &str| -> Result<u32, Problem> {
        t.text
            .parse::<u32>()
            .map_err(|_| at(t, format!("{rtype} {what} `{}` is not a number", t.text)))
    };
    let num16 = |t: &Token, what: &str| -> Result<u16, Problem> {
        t.text.parse::<u16>().map_err(|_| {
            at(
                t,
                format!("{rtype} {what} `{}` is not a number 0-65535", t.text),
            )
        })
    };
    let time = |t: &Token, what: &str| -> Result<u32, Problem> {
        parse_ttl(&t.text)
            .ok_or_else(|| at(t, format!("SOA {what} `{}` is not a time value", t.text)))
    };

    // RFC 3597 generic form works for every type.
    if toks.first().is_some_and(|t| t.text == "\\#" && !t.quoted) {
        let len_tok = toks
            .get(1)
            .ok_or_else(|| at(&toks[0], "\\# needs a length".into()))?;
        let len = len_tok
            .text
            .parse::<u16>()
            .map_err(|_| at(len_tok, format!("`{}` is not a length", len_tok.text)))?;
        let hex: String = toks[2..].iter().map(|t| t.text.as_str()).collect();
        let bytes = decode_hex(&hex).ok_or_else(|| at(&toks[0], "\\# data is not hex".into()))?;
        if bytes.len() != len as usize {
            return Err(at(
                len_tok,
                format!("\\# says {len} bytes but {} follow", bytes.len()),
            ));
        }
        return decode_wire(rtype, &bytes).map_err(|m| at(&toks[0], m));
    }

    Ok(match rtype {
        RecordType::A => {
            need(1)?;
            RData::A(
                Ipv4Addr::from_str(&toks[0].text)
                    .map_err(|_| {
                        at(
                            &toks[0],
                            format!("`{}` is not an IPv4 address", toks[0].text),
                        )
                    })?
                    .into(),
            )
        }
        RecordType::AAAA => {
            need(1)?;
            RData::AAAA(
                Ipv6Addr::from_str(&toks[0].text)
                    .map_err(|_| {
                        at(
                            &toks[0],
                            format!("`{}` is not an IPv6 address", toks[0].text),
                        )
                    })?
                    .into(),
            )
        }
        RecordType::NS => {
            need(1)?;
            RData::NS(NS(parse_name(cx, &toks[0], "NS target")?))
        }
        RecordType::CNAME => {
            need(1)?;
            RData::CNAME(CNAME(parse_name(cx, &toks[0], "CNAME target")?))
        }
        RecordType::PTR => {
            need(1)?;
            RData::PTR(PTR(parse_name(cx, &toks[0], "PTR target")?))
        }
        RecordType::MX => {
            need(2)?;
            RData::MX(MX::new(
                num16(&toks[0], "preference")?,
                parse_name(cx, &toks[1], "MX exchange")?,
            ))
        }
        RecordType::SRV => {
            need(4)?;
            RData::SRV(SRV::new(
                num16(&toks[0], "priority")?,
                num16(&toks[1], "weight")?,
                num16(&toks[2], "port")?,
                parse_name(cx, &toks[3], "SRV target")?,
            ))
        }
        RecordType::SOA => {
            need(7)?;
            RData::SOA(SOA::new(
                parse_name(cx, &toks[0], "SOA mname")?,
                parse_name(cx, &toks[1], "SOA rname")?,
                num(&toks[2], "serial")?,
                time(&toks[3], "refresh")? as i32,
                time(&toks[4], "retry")? as i32,
                time(&toks[5], "expire")? as i32,
                time(&toks[6], "minimum")?,
            ))
        }
        RecordType::TXT => {
            if toks.is_empty() {
                return Err(at(type_tok, "TXT needs at least one string".into()));
            }
            let mut strings = Vec::with_capacity(toks.len());
            for t in toks {
                let b = decode_escapes(&t.text).map_err(|m| at(t, m))?;
                if b.len() > 255 {
                    return Err(at(
                        t,
                        format!("TXT string is {} bytes; at most 255 fit in one", b.len()),
                    ));
                }
                strings.push(b);
            }
            RData::TXT(TXT::from_bytes(strings.iter().map(Vec::as_slice).collect()))
        }
        RecordType::CAA => {
            need(3)?;
            let flags = toks[0].text.parse::<u8>().map_err(|_| {
                at(
                    &toks[0],
                    format!("CAA flags `{}` is not 0-255", toks[0].text),
                )
            })?;
            let tag = &toks[1].text;
            if tag.is_empty() || tag.len() > 15 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(at(
                    &toks[1],
                    format!("CAA tag `{tag}` must be 1-15 letters or digits"),
                ));
            }
            let value = decode_escapes(&toks[2].text).map_err(|m| at(&toks[2], m))?;
            let mut wire = vec![flags, tag.len() as u8];
            wire.extend_from_slice(tag.as_bytes());
            wire.extend_from_slice(&value);
            decode_wire(RecordType::CAA, &wire).map_err(|m| at(&toks[2], m))?
        }
        RecordType::DS | RecordType::CDS => {
            // A parent zone holds its signed children's DS records; hickory parses them only
            // with its DNSSEC features, so they are read here: key tag, algorithm, digest
            // type, and the digest in hex (which may be split into several fields).
            if toks.len() < 4 {
                return Err(at(
                    toks.last().unwrap_or(type_tok),
                    format!("{rtype} needs key tag, algorithm, digest type and digest"),
                ));
            }
            let tag = num16(&toks[0], "key tag")?;
            let algorithm = toks[1].text.parse::<u8>().map_err(|_| {
                at(
                    &toks[1],
                    format!("{rtype} algorithm `{}` is not 0-255", toks[1].text),
                )
            })?;
            let digest_type = toks[2].text.parse::<u8>().map_err(|_| {
                at(
                    &toks[2],
                    format!("{rtype} digest type `{}` is not 0-255", toks[2].text),
                )
            })?;
            let hex: String = toks[3..].iter().map(|t| t.text.as_str()).collect();
            let digest = decode_hex(&hex)
                .ok_or_else(|| at(&toks[3], format!("{rtype} digest is not hex")))?;
            let mut wire = tag.to_be_bytes().to_vec();
            wire.extend_from_slice(&[algorithm, digest_type]);
            wire.extend_from_slice(&digest);
            decode_wire(rtype, &wire).map_err(|m| at(&toks[3], m))?
        }
        _ => hickory_fallback(cx, rtype, type_tok, toks)?,
    })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Decodes rdata wire bytes through hickory, so unknown and generic types still get a
/// well-formed `RData` (or a clear error if the bytes do not fit the type).
fn decode_wire(rtype: RecordType, bytes: &[u8]) -> Result<RData, String> {
    let len =
        u16::try_from(bytes.len()).map_err(|_| "rdata longer than 65535 bytes".to_string())?;
    let mut dec = BinDecoder::new(bytes);
    let rd = RData::read(&mut dec, rtype, Restrict::new(len))
        .map_err(|e| format!("{rtype} rdata is not valid: {e}"))?;
    if dec.index() != bytes.len() {
        return Err(format!("{rtype} rdata has trailing bytes"));
    }
    if let RData::Update0(_) = rd {
        return Err(format!("{rtype} rdata may not be empty"));
    }
    Ok(rd)
}

/// Hands one record to hickory's own parser for the types this module does not parse itself.
fn hickory_fallback(
    cx: &Ctx<'_>,
    rtype: RecordType,
    type_tok: &Token,
    toks: &[Token],
) -> Result<RData, Problem> {
    use hickory_proto::serialize::txt::Parser;
    if matches!(
        rtype,
        RecordType::OPT | RecordType::AXFR | RecordType::IXFR | RecordType::ANY | RecordType::NULL
    ) {
        return Err(Problem::new(
            cx.file,
            type_tok.line,
            type_tok.col,
            format!("{rtype} records cannot appear in a zone file"),
        ));
    }
    let mut line = String::from("@ 0 IN ");
    line.push_str(&rtype.to_string());
    for t in toks {
        line.push(' ');
        if t.quoted {
            line.push('"');
            line.push_str(&t.text);
            line.push('"');
        } else {
            line.push_str(&t.text);
        }
    }
    line.push('\n');
    let parsed = Parser::new(line, None, Some(cx.origin.clone()))
        .parse()
        .map_err(|e| {
            Problem::new(
                cx.file,
                type_tok.line,
                type_tok.col,
                format!("bad {rtype} rdata: {e}"),
            )
        })?;
    parsed
        .1
        .into_values()
        .next()
        .and_then(|rs| rs.records_without_rrsigs().next().map(|r| r.data.clone()))
        .ok_or_else(|| {
            Problem::new(
                cx.file,
                type_tok.line,
                type_tok.col,
                format!("{rtype} rdata is empty"),
            )
        })
}

// Keep the rdata module referenced for readers looking for where types come from.
#[allow(unused_imports)]
use rdata as _rdata_types;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Name, Vec<ParsedRecord>), Vec<Problem>> {
        parse_zone_file(
            Path::new("t.zone"),
            text,
            Name::from_ascii("example.com.").unwrap(),
        )
    }

    #[test]
    fn include_reads_regular_files_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = "$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\n";
        let good = dir.path().join("good.inc");
        std::fs::write(&good, "ns1 A 192.0.2.1\n").expect("write");
        let link = dir.path().join("link.inc");
        std::os::unix::fs::symlink(&good, &link).expect("symlink");
        let fifo = dir.path().join("fifo.inc");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        let zone = dir.path().join("example.com.zone");
        let read = |inc: &Path| {
            let text = format!("{base}$INCLUDE {}\n", inc.display());
            read_zone_file(&zone, &text, Name::from_ascii("example.com.").expect("n"))
        };
        for ok in [&good, &link] {
            let z = read(ok);
            assert!(z.problems.is_empty(), "{ok:?}: {:?}", z.problems);
            assert_eq!(z.records.len(), 3);
        }
        let secret = dir.path().join("secret.inc");
        std::fs::write(&secret, "root:x:0:0:TOPSECRET\n").expect("write");
        for (bad, why) in [
            // /dev/null first: code that reads any file fails here, before /dev/zero and the
            // FIFO could grow without bound or block.
            (Path::new("/dev/null"), "a device"),
            (dir.path(), "a directory"),
            (Path::new("/dev/zero"), "a device"),
            (fifo.as_path(), "a FIFO"),
        ] {
            let z = read(bad);
            assert_eq!(z.problems.len(), 1, "{bad:?}: {:?}", z.problems);
            let m = z.problems[0].to_string();
            assert!(
                m.contains(why) && m.contains("regular files"),
                "{bad:?}: {m}"
            );
        }
        // A file that is not a zone: its problems are listed, but reading it is the operator's
        // own choice; the copy of a secondary zone never includes anything (zone::copy).
        assert!(!read(&secret).problems.is_empty());
    }

    #[test]
    fn multi_line_soa_and_relative_names() {
        let (origin, recs) = parse(
            "$TTL 1h\n@ IN SOA ns1 hostmaster (\n  1 ; serial\n  2h 1h 1w 5m )\n  NS ns1\nns1 300 A 192.0.2.1\n",
        )
        .unwrap();
        assert_eq!(origin.to_string(), "example.com.");
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].record.ttl, 3600);
        assert_eq!(recs[1].record.record_type(), RecordType::NS);
        assert_eq!(recs[1].record.name.to_string(), "example.com.");
        assert_eq!(recs[2].line, 6);
        assert_eq!(recs[2].record.ttl, 300);
        match &recs[0].record.data {
            RData::SOA(s) => {
                assert_eq!(s.mname.to_string(), "ns1.example.com.");
                assert_eq!(s.minimum, 300);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn txt_escapes_and_quotes() {
        let (_, recs) = parse("$TTL 60\nt TXT \"a;b\" \"q\\\"x\" \\065B\n").unwrap();
        match &recs[0].record.data {
            RData::TXT(t) => {
                let parts: Vec<&[u8]> = t.txt_data.iter().map(|b| &b[..]).collect();
                assert_eq!(parts, vec![&b"a;b"[..], b"q\"x", b"AB"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_carry_positions() {
        let errs = parse("$TTL 60\nok A 192.0.2.1\nbad A 300.1.1.1\nx MX ten y\n").unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!((errs[0].line, errs[0].col), (3, 7));
        assert!(errs[0].message.contains("IPv4"));
        assert_eq!(errs[1].line, 4);
    }

    #[test]
    fn generic_rfc3597_and_fallback_types() {
        let (_, recs) = parse(
            "$TTL 60\ng TYPE65280 \\# 3 010203\na TYPE1 \\# 4 c0000201\ns SSHFP 1 1 0123456789abcdef0123456789abcdef01234567\n",
        )
        .unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(
            recs[1].record.data,
            RData::A(Ipv4Addr::new(192, 0, 2, 1).into())
        );
        assert_eq!(recs[2].record.record_type(), RecordType::SSHFP);
    }

    #[test]
    fn origin_directive_and_ttl_units() {
        let (apex, recs) = parse("$ORIGIN other.net.\n$TTL 1d2h\n@ NS ns\n").unwrap();
        assert_eq!(apex.to_string(), "other.net.");
        assert_eq!(recs[0].record.ttl, 93600);
        assert_eq!(parse_ttl("1w"), Some(604800));
        assert_eq!(parse_ttl("5x"), None);
    }

    fn lines(errs: &[Problem]) -> Vec<usize> {
        errs.iter().map(|p| p.line).collect()
    }

    #[test]
    fn lexical_errors_spoil_only_their_entry() {
        let z = read_zone_file(
            Path::new("t.zone"),
            "$TTL 60\nt TXT \"abc\nok A 192.0.2.1\nx A 192.0.2.2 )\ny A 192.0.2.3\n",
            Name::from_ascii("example.com.").unwrap(),
        );
        assert_eq!(lines(&z.problems), vec![2, 4], "{:?}", z.problems);
        assert!(z.problems[0].message.contains("unterminated"));
        assert!(z.problems[1].message.contains("`)`"));
        let owners: Vec<String> = z
            .records
            .iter()
            .map(|r| r.record.name.to_string())
            .collect();
        assert_eq!(owners, ["ok.example.com.", "y.example.com."]);
        // What the spoiled entries were is kept, for the zone checks.
        assert_eq!(z.unread.len(), 2);
        assert_eq!(z.unread[0].rtype, Some(RecordType::TXT));
        assert_eq!(z.unread[1].rtype, Some(RecordType::A));
    }

    #[test]
    fn unclosed_paren_resumes_at_the_next_owner() {
        let z = read_zone_file(
            Path::new("t.zone"),
            "$TTL 60\n@ SOA a b ( 1\n  2 3 4 5\n\n; note\nns A 192.0.2.1\nbad A x\n",
            Name::from_ascii("example.com.").unwrap(),
        );
        assert_eq!(lines(&z.problems), vec![2, 7], "{:?}", z.problems);
        assert_eq!(z.records.len(), 1);
        assert_eq!(z.records[0].line, 6);
        assert_eq!(z.unread[0].rtype, Some(RecordType::SOA));
    }

    #[test]
    fn a_bad_ttl_directive_does_not_spoil_the_records_after_it() {
        let z = read_zone_file(
            Path::new("t.zone"),
            "$TTL soon\na A 192.0.2.1\nb A 192.0.2.300\n",
            Name::from_ascii("example.com.").unwrap(),
        );
        assert_eq!(lines(&z.problems), vec![1, 3], "{:?}", z.problems);
        assert_eq!(z.records.len(), 1);
    }

    #[test]
    fn unbalanced_parens_are_reported() {
        let errs = parse("$TTL 60\n@ SOA a b ( 1 2 3 4 5\n").unwrap_err();
        assert!(errs[0].message.contains("never closed"), "{:?}", errs);
        assert_eq!(errs[0].line, 2);
    }

    #[test]
    fn an_empty_quoted_name_is_rejected() {
        let origin = Name::from_ascii("example.com.").unwrap();
        let text = "$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\n\"\"  IN  A  192.0.2.2\nx CNAME \"\"\n";
        let z = read_zone_file(Path::new("t.zone"), text, origin);
        let at: Vec<(usize, bool)> = z
            .problems
            .iter()
            .map(|p| (p.line, p.message.contains("is empty")))
            .collect();
        assert_eq!(at, [(5, true), (6, true)], "{:?}", z.problems);
    }

    #[test]
    fn ttls_above_2_pow_31_are_rejected() {
        let origin = Name::from_ascii("example.com.").unwrap();
        let text = "$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\n\
                    big 3000000000 A 192.0.2.2\nok 2147483647 A 192.0.2.3\n$TTL 2147483648\n";
        let z = read_zone_file(Path::new("t.zone"), text, origin);
        let at: Vec<(usize, bool)> = z
            .problems
            .iter()
            .map(|p| (p.line, p.message.contains("RFC 2181")))
            .collect();
        assert_eq!(at, [(5, true), (7, true)], "{:?}", z.problems);
    }
}
