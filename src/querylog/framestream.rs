//! Frame Streams (the `fstrm` protocol that carries dnstap): a stream of length-prefixed data
//! frames between control frames that name the content type.
//!
//! Wire form: a data frame is a 32-bit big-endian length (never 0) and that many bytes; a
//! control frame is an "escape" length of 0, then the control frame's length, its type, and
//! fields (only `CONTENT_TYPE` is defined). A file holds `START`, the data frames, `STOP`. A
//! socket is bidirectional: the writer sends `READY`, the reader answers `ACCEPT` with the
//! content types it takes, the writer sends `START` and data; at the end `STOP`, answered by
//! `FINISH`. That is what BIND, Unbound, Knot and the `dnstap`/`fstrm_capture` collectors speak.
//!
//! The writer here is used by one thread (the query log's); every socket operation has a
//! timeout so that a collector that stops reading can hold that thread only for a bounded
//! time, never the DNS threads.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The content type of dnstap payloads.
pub const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";

pub const ACCEPT: u32 = 0x01;
pub const START: u32 = 0x02;
pub const STOP: u32 = 0x03;
pub const READY: u32 = 0x04;
pub const FINISH: u32 = 0x05;
const FIELD_CONTENT_TYPE: u32 = 0x01;
/// Longest control frame accepted from a collector (libfstrm uses 512 bytes).
const MAX_CONTROL: usize = 512;

/// How long a collector may take to answer `READY` or `STOP`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one write may block on a collector that reads slowly; past it the connection is
/// dropped (a frame may have been cut, so the stream cannot go on) and made again later.
pub const WRITE_TIMEOUT: Duration = Duration::from_millis(500);

/// A control frame with its escape, of type `kind`, with the dnstap content type if asked.
pub fn control(kind: u32, with_content_type: bool) -> Vec<u8> {
    let mut body = kind.to_be_bytes().to_vec();
    if with_content_type {
        body.extend_from_slice(&FIELD_CONTENT_TYPE.to_be_bytes());
        body.extend_from_slice(&(CONTENT_TYPE.len() as u32).to_be_bytes());
        body.extend_from_slice(CONTENT_TYPE);
    }
    let mut out = vec![0, 0, 0, 0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads one control frame (escape included): its type and the content types it names.
pub fn read_control(r: &mut impl Read) -> io::Result<(u32, Vec<Vec<u8>>)> {
    let mut word = [0u8; 4];
    r.read_exact(&mut word)?;
    if word != [0; 4] {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "expected a control frame",
        ));
    }
    r.read_exact(&mut word)?;
    let len = u32::from_be_bytes(word) as usize;
    if !(4..=MAX_CONTROL).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control frame length out of range",
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let kind = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let mut types = Vec::new();
    let mut i = 4;
    while i + 8 <= body.len() {
        let field = u32::from_be_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
        let flen = u32::from_be_bytes([body[i + 4], body[i + 5], body[i + 6], body[i + 7]]);
        let start = i + 8;
        let end = start.saturating_add(flen as usize);
        let Some(value) = body.get(start..end) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "control field overruns its frame",
            ));
        };
        if field == FIELD_CONTENT_TYPE {
            types.push(value.to_vec());
        }
        i = end;
    }
    Ok((kind, types))
}

/// Reads one frame of any kind: `Ok(Err(kind))` for a control frame, `Ok(Ok(payload))` for
/// data. For readers (the tests, `meridian`'s own checks).
pub fn read_frame(r: &mut impl Read) -> io::Result<Result<Vec<u8>, u32>> {
    let mut word = [0u8; 4];
    r.read_exact(&mut word)?;
    let len = u32::from_be_bytes(word) as usize;
    if len == 0 {
        r.read_exact(&mut word)?;
        let clen = u32::from_be_bytes(word) as usize;
        if !(4..=MAX_CONTROL).contains(&clen) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "control frame length out of range",
            ));
        }
        let mut body = vec![0u8; clen];
        r.read_exact(&mut body)?;
        return Ok(Err(u32::from_be_bytes([
            body[0], body[1], body[2], body[3],
        ])));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Ok(payload))
}

enum Out {
    File(BufWriter<File>),
    Unix(BufWriter<UnixStream>),
}

/// A Frame Streams writer of dnstap payloads, started (`START` sent) and not yet stopped.
pub struct Writer {
    out: Out,
}

impl Writer {
    /// Starts a stream in a new file at `path` (created or truncated; the caller moves an
    /// older one aside).
    pub fn create_file(path: &Path) -> io::Result<Writer> {
        let f = File::create(path)?;
        let mut out = BufWriter::with_capacity(64 * 1024, f);
        out.write_all(&control(START, true))?;
        out.flush()?;
        Ok(Writer {
            out: Out::File(out),
        })
    }

    /// Connects to a collector's socket and does the bidirectional handshake.
    pub fn connect_unix(path: &Path) -> io::Result<Writer> {
        let mut s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
        s.write_all(&control(READY, true))?;
        let (kind, types) = read_control(&mut s)?;
        if kind != ACCEPT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("collector answered READY with control frame {kind}, not ACCEPT"),
            ));
        }
        // An ACCEPT without content types takes anything (libfstrm does the same).
        if !types.is_empty() && !types.iter().any(|t| t == CONTENT_TYPE) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "collector does not accept protobuf:dnstap.Dnstap",
            ));
        }
        s.write_all(&control(START, true))?;
        Ok(Writer {
            out: Out::Unix(BufWriter::with_capacity(64 * 1024, s)),
        })
    }

    fn w(&mut self) -> &mut dyn Write {
        match &mut self.out {
            Out::File(f) => f,
            Out::Unix(s) => s,
        }
    }

    /// Writes one data frame (buffered: [`Writer::flush`] sends it).
    pub fn frame(&mut self, payload: &[u8]) -> io::Result<()> {
        let w = self.w();
        w.write_all(&(payload.len() as u32).to_be_bytes())?;
        w.write_all(payload)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w().flush()
    }

    /// Ends the stream: `STOP`, and on a socket waits (bounded) for the collector's `FINISH`.
    pub fn finish(mut self) -> io::Result<()> {
        self.w().write_all(&control(STOP, false))?;
        self.flush()?;
        match self.out {
            Out::File(f) => f.get_ref().sync_data(),
            Out::Unix(s) => {
                let mut s = s.get_ref();
                s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
                // A collector that closes without FINISH has still got everything.
                let _ = read_control(&mut s);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_round_trip() {
        let f = control(READY, true);
        assert_eq!(&f[..4], &[0, 0, 0, 0]);
        let (kind, types) = read_control(&mut &f[..]).unwrap();
        assert_eq!(kind, READY);
        assert_eq!(types, vec![CONTENT_TYPE.to_vec()]);
        let (kind, types) = read_control(&mut &control(STOP, false)[..]).unwrap();
        assert_eq!((kind, types.len()), (STOP, 0));
    }

    #[test]
    fn bad_control_frames_are_errors() {
        assert!(read_control(&mut &[0u8, 0, 0, 1][..]).is_err());
        let huge = [0u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        assert!(read_control(&mut &huge[..]).is_err());
        // A field whose length runs past the frame.
        let mut f = vec![0, 0, 0, 0, 0, 0, 0, 12];
        f.extend_from_slice(&ACCEPT.to_be_bytes());
        f.extend_from_slice(&1u32.to_be_bytes());
        f.extend_from_slice(&100u32.to_be_bytes());
        assert!(read_control(&mut &f[..]).is_err());
    }
}
