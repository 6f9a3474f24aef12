//! The BIRD 2 speaker: the control socket's line protocol (what `birdc` speaks), used to
//! `enable` / `disable` the static protocol `bird_protocol` that carries the prefixes in
//! bird.conf. BIRD exports that protocol's routes over BGP; meridian never writes routes itself.
//!
//! The protocol: BIRD greets with `0001 BIRD <version> ready.`; each command is one line; a
//! reply is lines `DDDD-text` (more follow), ` text` (continuation), and ends with `DDDD text`.
//! Codes 0xxx are success, 1xxx/2xxx table rows and headings, 8xxx run-time errors, 9xxx parse
//! errors (an unknown protocol name is `9001 syntax error, unexpected CF_SYM_UNDEFINED`).
//!
//! The state is re-asserted every interval (`enable` of an enabled protocol is answered `0010
//! already enabled`, cheap and harmless), so a BIRD that restarted — which reads the protocol
//! as `disabled` from bird.conf — or was reconfigured is put right within one interval. A
//! missing socket or a BIRD that went away is retried each interval; the warning is logged when
//! the error first appears or changes, and every minute while it lasts.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::speaker::Speaker;

/// How long one command may take before the connection is given up.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// A persisting error is logged again this often.
const REPEAT_WARNING: Duration = Duration::from_secs(60);

/// One reply: its final code, and every line's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<(u16, String)>,
}

impl Reply {
    pub fn ok(&self) -> bool {
        self.code < 8000
    }
    /// The text of the reply in one line, for messages.
    pub fn text(&self) -> String {
        self.lines
            .iter()
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A connection to BIRD's control socket.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    pub greeting: String,
}

impl Client {
    pub fn connect(path: &std::path::Path) -> Result<Client, String> {
        let s = UnixStream::connect(path)
            .map_err(|e| format!("cannot connect to BIRD at {}: {e}", path.display()))?;
        let io = |e: std::io::Error| format!("BIRD socket {}: {e}", path.display());
        s.set_read_timeout(Some(COMMAND_TIMEOUT)).map_err(io)?;
        s.set_write_timeout(Some(COMMAND_TIMEOUT)).map_err(io)?;
        let writer = s.try_clone().map_err(io)?;
        let mut c = Client {
            reader: BufReader::new(s),
            writer,
            greeting: String::new(),
        };
        let hello = c.read_reply()?;
        if hello.code != 1 {
            return Err(format!(
                "{} is not a BIRD control socket (greeting: {})",
                path.display(),
                hello.text()
            ));
        }
        c.greeting = hello.text();
        Ok(c)
    }

    /// Sends one command line and reads its reply.
    pub fn command(&mut self, cmd: &str) -> Result<Reply, String> {
        debug_assert!(!cmd.contains('\n'));
        self.writer
            .write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| format!("BIRD: cannot send `{cmd}`: {e}"))?;
        self.read_reply().map_err(|e| format!("BIRD: `{cmd}`: {e}"))
    }

    fn read_reply(&mut self) -> Result<Reply, String> {
        let mut lines = Vec::new();
        let mut last = 0;
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| format!("no reply: {e}"))?;
            if n == 0 {
                return Err("BIRD closed the connection".into());
            }
            let line = line.trim_end_matches(['\n', '\r']);
            match parse_line(line) {
                Some(Line::Continued(code, text)) => {
                    last = code;
                    lines.push((code, text.to_string()));
                }
                Some(Line::Final(code, text)) => {
                    lines.push((code, text.to_string()));
                    return Ok(Reply { code, lines });
                }
                Some(Line::More(text)) => lines.push((last, text.to_string())),
                None => return Err(format!("unexpected line from BIRD: {line:?}")),
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    /// `DDDD-text`
    Continued(u16, &'a str),
    /// `DDDD text`: the last line of a reply.
    Final(u16, &'a str),
    /// ` text`: more of the previous code.
    More(&'a str),
}

fn parse_line(line: &str) -> Option<Line<'_>> {
    if let Some(rest) = line.strip_prefix(' ') {
        return Some(Line::More(rest));
    }
    let code = line.get(..4)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u16 = code.parse().ok()?;
    match line.as_bytes().get(4) {
        Some(b'-') => Some(Line::Continued(code, &line[5..])),
        Some(b' ') => Some(Line::Final(code, &line[5..])),
        None => Some(Line::Final(code, "")),
        _ => None,
    }
}

/// Whether `show protocols NAME` lists the protocol (a `1002` row starting with its name).
fn lists_protocol(reply: &Reply, name: &str) -> bool {
    reply.ok()
        && reply
            .lines
            .iter()
            .any(|(code, text)| *code == 1002 && text.split_whitespace().next() == Some(name))
}

pub struct Bird {
    socket: PathBuf,
    protocol: String,
    conn: Option<Client>,
    /// The protocol was seen in BIRD on the current connection.
    verified: bool,
    /// The last error logged and when, so a lasting outage is not logged every interval.
    warned: Option<(String, Instant)>,
    /// What BIRD last confirmed; a change is logged at info.
    confirmed: Option<bool>,
}

impl Bird {
    pub fn new(socket: PathBuf, protocol: String) -> Bird {
        Bird {
            socket,
            protocol,
            conn: None,
            verified: false,
            warned: None,
            confirmed: None,
        }
    }

    fn client(&mut self) -> Result<&mut Client, String> {
        if self.conn.is_none() {
            let c = Client::connect(&self.socket)?;
            tracing::info!(socket = %self.socket.display(), greeting = %c.greeting, "connected to BIRD");
            self.conn = Some(c);
            self.verified = false;
        }
        self.conn
            .as_mut()
            .ok_or_else(|| "no BIRD connection".to_string())
    }

    /// `show protocols NAME`: Ok(true) listed, Ok(false) BIRD does not know it.
    fn protocol_exists(&mut self) -> Result<bool, String> {
        let cmd = format!("show protocols {}", self.protocol);
        let name = self.protocol.clone();
        let reply = self.client()?.command(&cmd)?;
        Ok(lists_protocol(&reply, &name))
    }

    fn try_set(&mut self, announce: bool) -> Result<(), String> {
        if !self.verified {
            if !self.protocol_exists()? {
                return Err(format!(
                    "BIRD at {} has no protocol `{}`: add `protocol static {} {{ disabled; ... }}` \
                     to bird.conf (see docs/anycast.md)",
                    self.socket.display(),
                    self.protocol,
                    self.protocol
                ));
            }
            self.verified = true;
        }
        let verb = if announce { "enable" } else { "disable" };
        let cmd = format!("{verb} {}", self.protocol);
        let reply = self.client()?.command(&cmd)?;
        // 0011 enabled / 0010 already enabled / 0009 disabled / 0008 already disabled.
        if !reply.ok() {
            // BIRD reconfigured without the protocol: check again on the next try.
            self.verified = false;
            return Err(format!("BIRD refused `{cmd}`: {}", reply.text()));
        }
        Ok(())
    }

    fn warn(&mut self, e: &str) {
        let repeat = match &self.warned {
            Some((last, at)) => last != e || at.elapsed() >= REPEAT_WARNING,
            None => true,
        };
        if repeat {
            tracing::warn!(socket = %self.socket.display(), "anycast: {e}; retrying every interval");
            self.warned = Some((e.to_string(), Instant::now()));
        }
    }
}

impl Speaker for Bird {
    fn name(&self) -> &'static str {
        "bird"
    }

    fn start(&mut self) -> Result<(), String> {
        match self.protocol_exists() {
            Ok(true) => {
                self.verified = true;
                Ok(())
            }
            Ok(false) => Err(format!(
                "anycast.bird_protocol: BIRD at {} has no protocol `{}` (`show protocols {}` \
                 lists none); add `protocol static {} {{ disabled; ipv4; route PREFIX ...; }}` \
                 to bird.conf",
                self.socket.display(),
                self.protocol,
                self.protocol,
                self.protocol
            )),
            Err(e) => {
                // BIRD may start after us; the protocol is checked on the first connection.
                self.conn = None;
                self.warn(&e);
                Ok(())
            }
        }
    }

    fn set(&mut self, announce: bool) -> Result<(), String> {
        match self.try_set(announce) {
            Ok(()) => {
                if self.warned.take().is_some() {
                    tracing::info!(socket = %self.socket.display(), "anycast: BIRD is back");
                }
                if self.confirmed != Some(announce) {
                    tracing::info!(
                        protocol = %self.protocol,
                        "BIRD {} the anycast protocol",
                        if announce { "enabled" } else { "disabled" }
                    );
                    self.confirmed = Some(announce);
                }
                Ok(())
            }
            Err(e) => {
                // A broken connection is not reused: BIRD may have restarted.
                self.conn = None;
                self.confirmed = None;
                self.warn(&e);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines() {
        assert_eq!(
            parse_line("0001 BIRD 2.0.12 ready."),
            Some(Line::Final(1, "BIRD 2.0.12 ready."))
        );
        assert_eq!(
            parse_line("1002-meridian_anycast Static master4 up"),
            Some(Line::Continued(1002, "meridian_anycast Static master4 up"))
        );
        assert_eq!(
            parse_line(" Hostname is vm"),
            Some(Line::More("Hostname is vm"))
        );
        assert_eq!(parse_line("0000"), Some(Line::Final(0, "")));
        assert_eq!(parse_line("garbage"), None);
    }

    #[test]
    fn protocol_rows() {
        let r = Reply {
            code: 0,
            lines: vec![
                (2002, "Name Proto Table State Since Info".into()),
                (
                    1002,
                    "meridian_anycast Static master4 down 21:40:21.296".into(),
                ),
                (0, "".into()),
            ],
        };
        assert!(lists_protocol(&r, "meridian_anycast"));
        assert!(!lists_protocol(&r, "meridian"));
        let err = Reply {
            code: 9001,
            lines: vec![(9001, "syntax error, unexpected CF_SYM_UNDEFINED".into())],
        };
        assert!(!lists_protocol(&err, "meridian_anycast"));
    }
}
