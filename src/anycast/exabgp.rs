//! The ExaBGP speaker: meridian runs as an ExaBGP API process (`process meridian { run
//! "meridian serve --config …"; encoder text; }`) and writes text API commands on stdout, one
//! line per prefix, flushed at once. stdout carries these lines and nothing else (logs go to
//! stderr, see `cli::init_logging`), because ExaBGP executes every line it reads there.
//!
//! ExaBGP keeps the routes of a process in its own RIB and re-sends them when a BGP session
//! comes back, so a line is written only when the state changes, not every interval. When
//! ExaBGP restarts, it starts a fresh meridian, which announces after `rise` good checks like
//! any start. ExaBGP acknowledges commands (`done`/`error`) on our stdin; a thread drains it so
//! ExaBGP never blocks on a full pipe.

use std::io::Write;

use super::speaker::Speaker;

pub struct Exabgp<W: Write + Send> {
    out: W,
    prefixes: Vec<String>,
    /// What the last successful write said; `None` before the first.
    sent: Option<bool>,
}

impl<W: Write + Send> Exabgp<W> {
    pub fn new(out: W, prefixes: Vec<String>) -> Exabgp<W> {
        Exabgp {
            out,
            prefixes,
            sent: None,
        }
    }

    /// The lines for a state, exactly as ExaBGP's text encoder reads them.
    pub fn lines(prefixes: &[String], announce: bool) -> String {
        let verb = if announce { "announce" } else { "withdraw" };
        prefixes
            .iter()
            .map(|p| format!("{verb} route {p} next-hop self\n"))
            .collect()
    }

    /// The writer, for tests.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Reads and discards stdin (ExaBGP's acknowledgements) until it closes. ExaBGP's messages
/// are at debug level in the log; EOF means ExaBGP went away (it will stop or restart us).
fn drain_stdin() {
    let spawned = std::thread::Builder::new()
        .name("exabgp-stdin".into())
        .spawn(|| {
            use std::io::BufRead;
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                match line {
                    Ok(l) => tracing::debug!(line = %l, "from exabgp"),
                    Err(_) => break,
                }
            }
            tracing::debug!("exabgp closed our stdin");
        });
    if let Err(e) = spawned {
        tracing::warn!("exabgp: cannot start the stdin reader: {e}");
    }
}

impl<W: Write + Send> Speaker for Exabgp<W> {
    fn name(&self) -> &'static str {
        "exabgp"
    }

    fn start(&mut self) -> Result<(), String> {
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            tracing::warn!(
                "anycast.speaker = \"exabgp\" but stdout is a terminal: meridian is meant to be \
                 run by ExaBGP (process … {{ run \"meridian serve --config …\"; encoder text; }})"
            );
        } else {
            drain_stdin();
        }
        Ok(())
    }

    fn set(&mut self, announce: bool) -> Result<(), String> {
        if self.sent == Some(announce) {
            return Ok(());
        }
        let text = Self::lines(&self.prefixes, announce);
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|e| format!("cannot write to ExaBGP (stdout): {e}"))?;
        self.sent = Some(announce);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_on_change_only() {
        let mut s = Exabgp::new(
            Vec::new(),
            vec!["198.51.100.53/32".into(), "2001:db8:53::53/128".into()],
        );
        s.set(false).unwrap();
        s.set(false).unwrap();
        s.set(true).unwrap();
        s.set(true).unwrap();
        s.set(false).unwrap();
        let out = String::from_utf8(s.into_inner()).unwrap();
        assert_eq!(
            out,
            "withdraw route 198.51.100.53/32 next-hop self\n\
             withdraw route 2001:db8:53::53/128 next-hop self\n\
             announce route 198.51.100.53/32 next-hop self\n\
             announce route 2001:db8:53::53/128 next-hop self\n\
             withdraw route 198.51.100.53/32 next-hop self\n\
             withdraw route 2001:db8:53::53/128 next-hop self\n"
        );
    }
}
