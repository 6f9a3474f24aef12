//! Plain `http://` and `tcp://` probes of an address, on the prober's own epoll set
//! ([`super::reactor`]) and without hyper: a non-blocking connect, one write of a request made
//! once per target, reads into one buffer, the response head parsed with `httparse`, and as
//! much of the body as `expect_body` needs (`Content-Length`, chunked, or up to the close),
//! searched as it comes ([`super::http::Finder`]). Then a reset (SO_LINGER 0, set before
//! connecting), as every probe ends.
//!
//! The same verdicts as the hyper client that HTTPS keeps (`super::http`): status ranges,
//! `expect_body` within `BODY_LIMIT`, `X-Load`, a head above 16 KiB or one that is not HTTP
//! (`http`: "no valid HTTP response"), a connection closed early (`http`: "connection closed
//! before a full response"), `refused`, and the timeout the schedule wraps every probe in.
//! What it saves per probe, against the hyper path: hyper's connection state and dispatch
//! channel, the request's `HeaderMap` and `Uri` clones, tokio's socket registration and its
//! deregistration, and the `getsockopt(SO_ERROR)` after connecting (docs/performance.md).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use super::http::Finder;
use super::probe::Outcome;
use super::reactor::{Reactor, Registered, ERR, IN, OUT};

/// The largest response head read (as the hyper path's `HEAD_LIMIT`).
pub(super) const HEAD_LIMIT: usize = 16 * 1024;
/// Response headers parsed at most (hyper's default is 100).
const MAX_HEADERS: usize = 100;

/// Opens a non-blocking TCP socket to `to` (from `source` when given), ending with a reset,
/// registered in `reactor`; the connect is under way when it returns.
fn open(
    reactor: &Arc<Reactor>,
    to: SocketAddr,
    source: Option<IpAddr>,
) -> Result<Registered, Outcome> {
    let domain = if to.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let fail = |e: io::Error| super::tcp::io_failure(&e);
    let sock = socket2::Socket::new(
        domain,
        socket2::Type::STREAM.nonblocking().cloexec(),
        Some(socket2::Protocol::TCP),
    )
    .map_err(fail)?;
    // Set before connecting: the close then resets whatever state the connection is in.
    sock.set_linger(Some(std::time::Duration::ZERO))
        .map_err(fail)?;
    if let Some(src) = source {
        if src.is_ipv4() != to.is_ipv4() {
            return Err(fail(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{to} is not of the family of source {src}"),
            )));
        }
        sock.bind(&SocketAddr::new(src, 0).into()).map_err(fail)?;
    }
    match sock.connect(&to.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(fail(e)),
    }
    // SAFETY: the descriptor comes out of `sock`, which gives up owning it.
    let fd = unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(sock)) };
    reactor.register(fd).map_err(fail)
}

/// Why a connect that signalled an error failed (only on that path: a connect that worked
/// costs no `getsockopt`).
fn connect_error(s: &Registered) -> Outcome {
    let sock = socket2::SockRef::from(s);
    let e = match sock.take_error() {
        Ok(Some(e)) => e,
        Ok(None) => io::Error::from(io::ErrorKind::ConnectionAborted),
        Err(e) => e,
    };
    super::tcp::io_failure(&e)
}

/// Waits for the connect to finish: `Ok` when it worked.
async fn connected(s: &Registered) -> Result<(), Outcome> {
    // An error with or without OUT: a connection refused, or one that came up and was
    // reset at once (tokio's connect reports the latter as an error too).
    if s.wait(OUT).await & ERR != 0 {
        return Err(connect_error(s));
    }
    Ok(())
}

/// A `tcp://` check of an address: healthy when the connection is accepted.
pub(super) async fn tcp_check(
    reactor: &Arc<Reactor>,
    to: SocketAddr,
    source: Option<IpAddr>,
) -> Outcome {
    let s = match open(reactor, to, source) {
        Ok(s) => s,
        Err(o) => return o,
    };
    match connected(&s).await {
        Ok(()) => Outcome::ok(None),
        Err(o) => o,
    }
}

fn send(s: &Registered, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for its length; MSG_NOSIGNAL: a closed peer is an error, not
    // a SIGPIPE.
    let n = unsafe {
        libc::send(
            s.fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn read_failure(e: &io::Error) -> Outcome {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Outcome::fail("refused", "refused"),
        io::ErrorKind::TimedOut => Outcome::fail("timeout", "timeout"),
        _ => Outcome::fail("error", format!("error: {e}")),
    }
}

fn closed_early() -> Outcome {
    Outcome::fail("http", "connection closed before a full response")
}

/// A plain HTTP check of an address, ready-made: the request's bytes and what the response
/// must show.
pub(super) struct PlainHttp<'a> {
    pub request: &'a [u8],
    pub expect_status: &'a [(u16, u16)],
    pub expect_body: Option<&'a [u8]>,
}

/// What the head said that the rest of the exchange needs.
struct Head {
    status: u16,
    load: Option<f64>,
    body: Framing,
    /// Bytes of the head, to drop from the buffer.
    len: usize,
}

#[derive(Debug, PartialEq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Parses a response head at the start of `buf`: `Ok(None)` when more is needed.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.code.unwrap_or(0);
    let mut load = None;
    let mut length = None;
    let mut chunked = false;
    let mut encoded = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("x-load") {
            load = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite());
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or("invalid content-length parsed")?;
            if length.is_some_and(|l| l != v) {
                return Err("invalid content-length parsed".into());
            }
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            encoded = true;
            // Chunked only when it is the last coding (RFC 9112 6.3).
            chunked = std::str::from_utf8(h.value).is_ok_and(|v| {
                v.rsplit(',')
                    .next()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
            });
        }
    }
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else if encoded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match length {
            Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    Ok(Some(Head {
        status,
        load,
        body,
        len,
    }))
}

/// A chunked body's decoder, fed as bytes come: hands the data to `find`.
#[derive(Debug, Default)]
struct Chunks {
    state: ChunkState,
    /// Hex digits of the size line so far, and whether an extension (`;…`) began.
    size: u64,
    digits: usize,
    in_ext: bool,
}

#[derive(Debug, Default, PartialEq)]
enum ChunkState {
    #[default]
    Size,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines until an empty one.
    Trailer {
        at_line_start: bool,
    },
    Done,
}

impl Chunks {
    /// Feeds `data`; `Err` on a malformed body.
    fn feed(&mut self, mut data: &[u8], find: &mut Finder<'_>) -> Result<(), &'static str> {
        while !data.is_empty() && self.state != ChunkState::Done {
            match self.state {
                ChunkState::Size => {
                    let b = data[0];
                    data = &data[1..];
                    match b {
                        b'\r' => self.state = ChunkState::SizeLf,
                        b'\n' => self.end_size(),
                        _ if self.in_ext => {}
                        b';' | b' ' | b'\t' => self.in_ext = true,
                        _ => {
                            let d = (b as char).to_digit(16).ok_or("invalid chunk size")?;
                            self.digits += 1;
                            if self.digits > 15 {
                                return Err("invalid chunk size");
                            }
                            self.size = self.size * 16 + u64::from(d);
                        }
                    }
                }
                ChunkState::SizeLf => {
                    if data[0] != b'\n' {
                        return Err("invalid chunk size line");
                    }
                    data = &data[1..];
                    self.end_size();
                }
                ChunkState::Data(left) => {
                    let take = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    find.feed(&data[..take]);
                    data = &data[take..];
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataCr => {
                    match data[0] {
                        b'\r' => self.state = ChunkState::DataLf,
                        b'\n' => self.state = ChunkState::Size,
                        _ => return Err("invalid chunk end"),
                    }
                    data = &data[1..];
                }
                ChunkState::DataLf => {
                    if data[0] != b'\n' {
                        return Err("invalid chunk end");
                    }
                    data = &data[1..];
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer { at_line_start } => {
                    let b = data[0];
                    data = &data[1..];
                    self.state = match (b, at_line_start) {
                        (b'\n', true) => ChunkState::Done,
                        (b'\n', false) => ChunkState::Trailer {
                            at_line_start: true,
                        },
                        (b'\r', s) => ChunkState::Trailer { at_line_start: s },
                        _ => ChunkState::Trailer {
                            at_line_start: false,
                        },
                    };
                }
                ChunkState::Done => {}
            }
        }
        Ok(())
    }

    fn end_size(&mut self) {
        self.state = if self.digits == 0 {
            // No digits: not a size line; read as the end so that the body stops here.
            ChunkState::Done
        } else if self.size == 0 {
            ChunkState::Trailer {
                at_line_start: true,
            }
        } else {
            ChunkState::Data(self.size)
        };
        (self.size, self.digits, self.in_ext) = (0, 0, false);
    }

    fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

impl PlainHttp<'_> {
    /// One request and as much of its response as the verdict needs.
    pub async fn run(
        &self,
        reactor: &Arc<Reactor>,
        to: SocketAddr,
        source: Option<IpAddr>,
    ) -> Outcome {
        let s = match open(reactor, to, source) {
            Ok(s) => s,
            Err(o) => return o,
        };
        if let Err(o) = connected(&s).await {
            return o;
        }
        // The request: one send on a new connection, unless the socket buffer is full.
        let mut sent = 0;
        while sent < self.request.len() {
            s.take(OUT);
            match send(&s, &self.request[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if s.wait(OUT).await & OUT == 0 {
                        return connect_error(&s);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return read_failure(&e),
            }
        }
        self.response(&s).await
    }

    async fn response(&self, s: &Registered) -> Outcome {
        let mut buf: Vec<u8> = Vec::with_capacity(2048);
        let mut eof = false;
        // The head, after any 1xx interim responses.
        let head = loop {
            match parse_head(&buf) {
                Ok(Some(h)) if (100..200).contains(&h.status) && h.status != 101 => {
                    buf.drain(..h.len);
                    continue;
                }
                Ok(Some(h)) => break h,
                Ok(None) if eof => return closed_early(),
                Ok(None) if buf.len() >= HEAD_LIMIT => {
                    return Outcome::fail(
                        "http",
                        "no valid HTTP response: message head is too large",
                    )
                }
                Ok(None) => {}
                Err(e) => {
                    return Outcome::fail("http", format!("no valid HTTP response: {e}"));
                }
            }
            match fill(s, &mut buf, HEAD_LIMIT).await {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(o) => return o,
            }
        };
        let load = head.load;
        let fail = |class, reason: String| {
            let mut o = Outcome::fail(class, reason);
            o.load = Some(load);
            o
        };
        let status = head.status;
        if !self
            .expect_status
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
        {
            return fail("status", format!("status {status}"));
        }
        let Some(needle) = self.expect_body else {
            return Outcome::ok(Some(load));
        };
        let mut find = Finder::new(needle);
        buf.drain(..head.len);
        let mut chunks = Chunks::default();
        let mut left = match head.body {
            Framing::Length(n) => n,
            _ => u64::MAX,
        };
        loop {
            // What is in the buffer belongs to the body.
            match head.body {
                Framing::None => break,
                Framing::Length(_) | Framing::UntilClose => {
                    let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    find.feed(&buf[..take]);
                    left -= take as u64;
                    if head.body != Framing::UntilClose && left == 0 {
                        break;
                    }
                }
                Framing::Chunked => {
                    if let Err(e) = chunks.feed(&buf, &mut find) {
                        return fail("http", format!("no valid HTTP response: {e}"));
                    }
                    if chunks.done() {
                        break;
                    }
                }
            }
            buf.clear();
            if find.done() {
                break;
            }
            if eof {
                if head.body == Framing::UntilClose {
                    break;
                }
                let mut o = closed_early();
                o.load = Some(load);
                return o;
            }
            match fill(s, &mut buf, 16 * 1024).await {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(mut o) => {
                    o.load = Some(load);
                    return o;
                }
            }
        }
        if find.found {
            Outcome::ok(Some(load))
        } else {
            fail("body", "body mismatch".into())
        }
    }
}

/// Reads what has come into `buf` (up to `limit` bytes in it), waiting for it if nothing
/// has: the bytes read, 0 at the end of the stream.
async fn fill(s: &Registered, buf: &mut Vec<u8>, limit: usize) -> Result<usize, Outcome> {
    loop {
        // Taken before reading: an edge that comes during the read is kept for the wait.
        s.take(IN);
        let room = limit.saturating_sub(buf.len()).max(1);
        if buf.len() == buf.capacity() {
            // Grows by doubling from 2 KiB: a probe's answer is a few hundred bytes.
            buf.reserve(buf.len().max(2048).min(room));
        }
        // Into the spare capacity as it is: zeroing it first cost more than the parse.
        let spare = buf.spare_capacity_mut();
        let want = spare.len().min(room);
        // SAFETY: `spare` is writable for `want` bytes; recv writes at most that many.
        let n = unsafe { libc::recv(s.fd(), spare.as_mut_ptr().cast(), want, libc::MSG_DONTWAIT) };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: recv initialised the first `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => {
                // An error or hang-up without input: the read that follows would say
                // nothing more, so say why here.
                if s.wait(IN).await & IN == 0 {
                    return Err(connect_error(s));
                }
            }
            io::ErrorKind::Interrupted => {}
            _ => return Err(read_failure(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// One probe of a server on loopback that reads the request head and writes `answer`
    /// (then closes, with a FIN); returns the outcome and the request the server read.
    fn exchange(answer: &'static [u8], expect_body: Option<&[u8]>) -> (Outcome, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let head = crate::prober::test_server::read_head(&mut c);
            // In pieces, so that the probe reads more than once.
            for part in answer.chunks(7) {
                let _ = c.write_all(part);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            String::from_utf8(head).unwrap()
        });
        let request = b"GET /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = rt.block_on(async {
            let r = Reactor::new().expect("epoll");
            tokio::spawn(r.clone().drive());
            let p = PlainHttp {
                request,
                expect_status: &[(200, 299)],
                expect_body,
            };
            tokio::time::timeout(std::time::Duration::from_secs(5), p.run(&r, to, None))
                .await
                .expect("the probe ended")
        });
        (out, server.join().unwrap())
    }

    #[test]
    fn plain_exchanges_over_real_sockets() {
        let (o, req) = exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-Load: 0.25\r\n\r\nstatus ok",
            Some(b"us o"),
        );
        assert!(o.ok, "{}", o.reason);
        assert_eq!(o.load, Some(Some(0.25)));
        assert!(req.starts_with("GET /h HTTP/1.1\r\nHost: x\r\n"), "{req}");
        // An interim 100, then a chunked body with the needle across two chunks.
        let (o, _) = exchange(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nsta\r\n7\r\ntus: ok\r\n0\r\n\r\n",
            Some(b"status: ok"),
        );
        assert!(o.ok, "{}", o.reason);
        let (o, _) = exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnope",
            Some(b"ok"),
        );
        assert_eq!((o.class, o.reason.as_str()), ("body", "body mismatch"));
        assert_eq!(o.load, Some(None));
        // Without expect_body the head decides; the body is never read.
        let (o, _) = exchange(b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy", None);
        assert_eq!((o.class, o.reason.as_str()), ("status", "status 503"));
        // Read to the close.
        let (o, _) = exchange(b"HTTP/1.0 200 OK\r\n\r\nall ok here", Some(b"ok here"));
        assert!(o.ok, "{}", o.reason);
        let (o, _) = exchange(b"SSH-2.0-OpenSSH_9.2\r\n", None);
        assert_eq!(o.class, "http");
        assert!(
            o.reason.starts_with("no valid HTTP response"),
            "{}",
            o.reason
        );
        let (o, _) = exchange(b"HTTP/1.1 200 OK\r\nContent-Le", None);
        assert_eq!(
            (o.class, o.reason.as_str()),
            ("http", "connection closed before a full response")
        );
        let (o, _) = exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort",
            Some(b"ok"),
        );
        assert_eq!(
            (o.class, o.reason.as_str()),
            ("http", "connection closed before a full response")
        );
    }

    #[test]
    fn refused_and_tcp_checks() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        rt.block_on(async {
            let r = Reactor::new().expect("epoll");
            tokio::spawn(r.clone().drive());
            let o = tcp_check(&r, open, None).await;
            assert!(o.ok, "{}", o.reason);
            let o = tcp_check(&r, closed, None).await;
            assert_eq!((o.class, o.reason.as_str()), ("refused", "refused"));
            let p = PlainHttp {
                request: b"GET / HTTP/1.1\r\n\r\n",
                expect_status: &[(200, 299)],
                expect_body: None,
            };
            let o = p.run(&r, closed, None).await;
            assert_eq!((o.class, o.reason.as_str()), ("refused", "refused"));
            // A source of the other family.
            let o = tcp_check(&r, open, Some("::1".parse().unwrap())).await;
            assert_eq!(o.class, "connect", "{}", o.reason);
        });
    }

    fn body(chunks: &[&[u8]], needle: &[u8]) -> Result<(bool, bool), &'static str> {
        let mut f = Finder::new(needle);
        let mut c = Chunks::default();
        for part in chunks {
            c.feed(part, &mut f)?;
        }
        Ok((f.found, c.done()))
    }

    #[test]
    fn chunked_bodies() {
        let whole: &[u8] = b"4\r\nstat\r\n6;ext=1\r\nus: ok\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(body(&[whole], b"status: ok"), Ok((true, true)));
        // Byte by byte.
        let parts: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(body(&parts, b"us: o"), Ok((true, true)));
        assert_eq!(body(&[whole], b"nope"), Ok((false, true)));
        // The size line is not data.
        assert_eq!(body(&[whole], b"ext"), Ok((false, true)));
        assert_eq!(
            body(&[b"A\r\n0123456789\r\n0\r\n\r\n"], b"89"),
            Ok((true, true))
        );
        assert!(body(&[b"zz\r\n"], b"x").is_err());
        assert!(body(&[b"2\r\nabX"], b"x").is_err());
        // Not finished yet.
        assert_eq!(body(&[b"2\r\nab"], b"ab"), Ok((true, false)));
    }

    #[test]
    fn heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Load: 0.5\r\n\r\nok")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.load, h.body, h.len),
            (200, Some(0.5), Framing::Length(2), 51)
        );
        let h = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, Framing::Chunked);
        let h = parse_head(b"HTTP/1.0 503 No\r\nx-load: nan\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.load, h.body), (503, None, Framing::UntilClose));
        let h = parse_head(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, Framing::None);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le")
            .unwrap()
            .is_none());
        assert!(parse_head(b"SSH-2.0-OpenSSH_9.2\r\n").is_err());
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n")
                .is_err()
        );
    }
}
