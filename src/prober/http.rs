//! HTTP probes as a target makes them: the request worked out once per target
//! ([`HttpProbe::new`]: the head's bytes for the plain path, the `HeaderMap` and `Uri` for
//! hyper), then per probe one of two clients. Plain `http://` to an address goes through the
//! prober's own epoll loop without hyper ([`super::plain`]: the cheap path thousands of
//! targets a second take); HTTPS, and names resolved at each probe, through hyper's HTTP/1.1
//! client connection (`hyper::client::conn::http1`) over tokio, with rustls in between for
//! HTTPS. Never a pool: every probe opens its own connection, as HAProxy and gdnsd do, so
//! that it sees what a new client sees (accept queue, TLS handshake, certificate).
//!
//! Both read as little of the response as the verdict needs: the head alone without
//! `expect_body`, else the body until the substring shows up (at most [`BODY_LIMIT`]),
//! searched chunk by chunk ([`Finder`]).

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::IpAddr;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use std::sync::Arc;

use super::plain::PlainHttp;
use super::probe::{Kind, Outcome, Target, BODY_LIMIT};
use super::reactor::Reactor;
use super::tcp::{self, Dest};
use super::tls::TlsConfigs;

/// The largest response head read; the body is read beyond it only for `expect_body`.
const HEAD_LIMIT: usize = 16 * 1024;

pub(super) struct HttpProbe {
    dest: Dest,
    source: Option<IpAddr>,
    /// HTTPS: the client settings and the name for SNI and the certificate check.
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// The request target in origin form (`/path?query`).
    uri: Uri,
    headers: HeaderMap,
    conn: hyper::client::conn::http1::Builder,
    expect_status: Vec<(u16, u16)>,
    expect_body: Option<Box<[u8]>>,
    /// Plain HTTP: the request as it goes on the wire (what hyper writes from `uri` and
    /// `headers`: title-case names, in the map's order), for [`super::plain`].
    request: Box<[u8]>,
}

impl HttpProbe {
    pub fn new(t: &Target, tls: Option<&TlsConfigs>) -> Result<HttpProbe, String> {
        let s = &t.settings;
        let url = url::Url::parse(&t.url).map_err(|e| format!("bad URL `{}`: {e}", t.url))?;
        let host = url
            .host_str()
            .ok_or_else(|| format!("URL `{}` has no host", t.url))?;
        let port = url.port_or_known_default().unwrap_or(match t.kind {
            Kind::Https => 443,
            _ => 80,
        });
        let dest = Dest::parse(&format!("{host}:{port}")); // IPv6 stays in brackets
        let mut target = url.path().to_string();
        if let Some(q) = url.query() {
            target.push('?');
            target.push_str(q);
        }
        let uri = target
            .parse::<Uri>()
            .map_err(|e| format!("bad URL `{}`: {e}", t.url))?;

        let mut headers = HeaderMap::new();
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!(
                "meridian/",
                env!("CARGO_PKG_VERSION"),
                " health-check"
            )),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        for (k, v) in &s.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("header `{k}` is not valid"))?;
            let value =
                HeaderValue::from_str(v).map_err(|_| format!("header `{k}`: value not valid"))?;
            headers.insert(name, value);
        }
        // `host` names the endpoint in Host (and, for HTTPS, SNI), though the probe connects
        // to the URL's address; else Host is the URL's authority, as a browser sends it.
        let host_header = match (&s.host, url.port()) {
            (Some(h), _) => Some(h.clone()),
            _ if headers.contains_key(header::HOST) => None,
            (None, Some(p)) => Some(format!("{host}:{p}")),
            (None, None) => Some(host.to_string()),
        };
        if let Some(h) = host_header {
            let value = HeaderValue::from_str(&h)
                .map_err(|_| format!("host `{h}` is not a valid Host header"))?;
            headers.insert(header::HOST, value);
        }
        // One request per connection: the endpoint closes it after answering.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));

        let tls = match t.kind {
            Kind::Https => {
                let tls = tls.ok_or("tls error: no TLS configuration could be built")?;
                let cfg = if s.tls_verify {
                    tls.verify.clone()
                } else {
                    tls.insecure.clone()
                };
                let name = s
                    .host
                    .as_deref()
                    .unwrap_or(host.trim_start_matches('[').trim_end_matches(']'));
                let name = ServerName::try_from(name.to_string())
                    .map_err(|e| format!("`{name}` is not a TLS server name: {e}"))?;
                Some((tokio_rustls::TlsConnector::from(cfg), name))
            }
            _ => None,
        };
        let request = wire_request(&uri, &headers);
        let mut conn = hyper::client::conn::http1::Builder::new();
        conn.title_case_headers(true)
            .max_buf_size(HEAD_LIMIT.max(BODY_LIMIT / 2));
        Ok(HttpProbe {
            dest,
            source: s.source,
            tls,
            uri,
            headers,
            conn,
            expect_status: s.expect_status.clone(),
            expect_body: s.expect_body.as_ref().map(|b| b.as_bytes().into()),
            request,
        })
    }

    /// One probe: plain HTTP to an address on the prober's own epoll set when it has one
    /// ([`super::plain`]), else (HTTPS, a name to resolve) through tokio and hyper.
    pub async fn run(&self, reactor: Option<&Arc<Reactor>>) -> Outcome {
        if let (None, Dest::Addr(to), Some(r)) = (&self.tls, &self.dest, reactor) {
            let p = PlainHttp {
                request: &self.request,
                expect_status: &self.expect_status,
                expect_body: self.expect_body.as_deref(),
            };
            return p.run(r, *to, self.source).await;
        }
        // Boxed on its own: hyper's and rustls' state is kilobytes, and the plain path's
        // future (which every probe of an address makes) should not be that large.
        Box::pin(self.run_hyper()).await
    }

    async fn run_hyper(&self) -> Outcome {
        let tcp = match tcp::connect(&self.dest, self.source).await {
            Ok(s) => s,
            Err(o) => return o,
        };
        tcp::close_now(&tcp);
        match &self.tls {
            None => self.exchange(NoShutdown(TokioIo::new(tcp))).await,
            Some((connector, name)) => match connector.connect(name.clone(), tcp).await {
                Ok(s) => self.exchange(NoShutdown(TokioIo::new(s))).await,
                Err(e) => tls_failure(&e),
            },
        }
    }

    /// One request and as much of its response as the verdict needs, on `io`.
    async fn exchange<T>(&self, io: T) -> Outcome
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin,
    {
        let (mut tx, conn) = match self.conn.handshake::<_, NoBody>(io).await {
            Ok(c) => c,
            Err(e) => return classify(&e),
        };
        let mut req = Request::new(NoBody);
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        let mut conn = pin!(conn);
        let mut conn_done = false;
        let mut work = pin!(async {
            match tx.send_request(req).await {
                Ok(resp) => self.judge(resp).await,
                Err(e) => classify(&e),
            }
        });
        // The connection is driven here, beside the request, rather than spawned: a probe is
        // one future, and dropping it (timeout, shutdown) drops the connection with it. Its
        // errors reach the request or the body, so its own result is not needed.
        poll_fn(|cx| {
            if !conn_done && conn.as_mut().poll(cx).is_ready() {
                conn_done = true;
            }
            work.as_mut().poll(cx)
        })
        .await
    }

    async fn judge(&self, resp: Response<Incoming>) -> Outcome {
        let status = resp.status().as_u16();
        let load = resp
            .headers()
            .get("x-load")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite());
        let fail = |class, reason: String| {
            let mut o = Outcome::fail(class, reason);
            o.load = Some(load);
            o
        };
        if !self
            .expect_status
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
        {
            return fail("status", format!("status {status}"));
        }
        if let Some(needle) = &self.expect_body {
            match body_contains(resp.into_body(), needle).await {
                Ok(true) => {}
                Ok(false) => return fail("body", "body mismatch".into()),
                Err(e) => {
                    let mut o = classify(&e);
                    o.load = Some(load);
                    return o;
                }
            }
        }
        Outcome::ok(Some(load))
    }
}

/// The request hyper would write for `uri` and `headers` (`title_case_headers`): the request
/// line, each header with its name in title case, the blank line.
fn wire_request(uri: &Uri, headers: &HeaderMap) -> Box<[u8]> {
    let mut r = Vec::with_capacity(256);
    r.extend_from_slice(b"GET ");
    r.extend_from_slice(uri.to_string().as_bytes());
    r.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        let mut upper = true;
        for &b in name.as_str().as_bytes() {
            r.push(if upper { b.to_ascii_uppercase() } else { b });
            upper = b == b'-';
        }
        r.extend_from_slice(b": ");
        r.extend_from_slice(value.as_bytes());
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r.into_boxed_slice()
}

/// Whether the first [`BODY_LIMIT`] bytes of `body` contain `needle`, stopping as soon as
/// they do.
async fn body_contains(mut body: Incoming, needle: &[u8]) -> Result<bool, hyper::Error> {
    let mut find = Finder::new(needle);
    while !find.done() {
        match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => break,
            Some(Err(e)) => return Err(e),
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    find.feed(d);
                }
            }
        }
    }
    Ok(find.found)
}

/// A substring search over a body that comes in chunks, without joining them: only the last
/// `needle.len() - 1` bytes of what came before are kept, to find a needle across two chunks.
pub(super) struct Finder<'a> {
    needle: &'a [u8],
    carry: Vec<u8>,
    left: usize,
    pub found: bool,
}

impl<'a> Finder<'a> {
    pub fn new(needle: &'a [u8]) -> Finder<'a> {
        Finder {
            needle,
            carry: Vec::new(),
            left: BODY_LIMIT,
            found: needle.is_empty(),
        }
    }
    pub fn done(&self) -> bool {
        self.found || self.left == 0
    }
    pub fn feed(&mut self, data: &[u8]) {
        if self.done() {
            return;
        }
        let chunk = &data[..data.len().min(self.left)];
        self.left -= chunk.len();
        let keep = self.needle.len() - 1;
        if !self.carry.is_empty() {
            // Only needles that start in `carry` and end in `chunk` are new here.
            let take = chunk.len().min(keep);
            self.carry.extend_from_slice(&chunk[..take]);
            if contains(&self.carry, self.needle) {
                self.found = true;
                return;
            }
            self.carry.truncate(self.carry.len() - take);
        }
        if contains(chunk, self.needle) {
            self.found = true;
            return;
        }
        if chunk.len() >= keep {
            self.carry.clear();
            self.carry.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            self.carry.extend_from_slice(chunk);
            let extra = self.carry.len().saturating_sub(keep);
            self.carry.drain(..extra);
        }
    }
}

pub(super) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Names why an exchange failed: `timeout`, `refused`, `tls error: …`, a response that is not
/// HTTP, else the innermost cause.
fn classify(e: &hyper::Error) -> Outcome {
    let mut innermost = e.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Outcome::fail("tls", format!("tls error: {tls}"));
        }
        innermost = err.to_string();
        cur = err.source();
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    return Outcome::fail("refused", "refused")
                }
                std::io::ErrorKind::TimedOut => return Outcome::fail("timeout", "timeout"),
                _ => {}
            }
            // io::Error::source() skips the error it wraps: step into that one instead.
            if let Some(inner) = io.get_ref() {
                cur = Some(inner);
            }
        }
    }
    if e.is_parse() {
        Outcome::fail("http", format!("no valid HTTP response: {e}"))
    } else if e.is_incomplete_message() {
        Outcome::fail("http", "connection closed before a full response")
    } else {
        Outcome::fail("error", format!("error: {innermost}"))
    }
}

/// A TLS handshake that failed: rustls' reason when it has one, else the I/O error.
fn tls_failure(e: &std::io::Error) -> Outcome {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => Outcome::fail("tls", format!("tls error: {tls}")),
        None => tcp::io_failure(e),
    }
}

/// The body of a probe's GET: none.
struct NoBody;

impl Body for NoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(None)
    }
    fn is_end_stream(&self) -> bool {
        true
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(0)
    }
}

/// The probe's connection as hyper sees it, but with `shutdown` doing nothing. hyper shuts the
/// write side down once a `Connection: close` exchange is over: a FIN, which the endpoint's
/// kernel receives and acknowledges, all in the prober's thread on loopback (15 % of the
/// prober's CPU at 10,000 probes a second, `perf record` on `benches/probe_cpu.rs`), right
/// before the close that resets the connection anyway ([`tcp::close_now`]). For HTTPS it
/// skips the close_notify alert, for the same reason: the reset follows at once.
struct NoShutdown<T>(T);

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for NoShutdown<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for NoShutdown<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe ends its connection with a reset alone: the endpoint never sees a FIN from it
    /// (hyper's shutdown of the write side was one more packet each way, for nothing).
    #[test]
    fn a_probe_sends_no_fin_before_its_reset() {
        // Both ways a plain HTTP probe can go: hyper on tokio's sockets, and the prober's own
        // epoll loop.
        no_fin_before_reset(false);
        no_fin_before_reset(true);
    }

    fn no_fin_before_reset(plain: bool) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            crate::prober::test_server::read_head(&mut c);
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .unwrap();
            // What comes next from the probe: a FIN reads as Ok(0), a reset as an error.
            let mut buf = [0u8; 1024];
            c.read(&mut buf)
        });
        let settings = super::super::probe::Settings {
            kind: Kind::Http,
            path: "/".into(),
            port: None,
            interval: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(1),
            rise: 1,
            fall: 1,
            expect_status: vec![(200, 299)],
            expect_body: Some("ok".into()),
            host: None,
            headers: Vec::new(),
            tls_verify: true,
            source: None,
            command: Vec::new(),
            expire: std::time::Duration::from_secs(3),
        };
        let target = Target::new(addr.ip(), &format!("http://{addr}/"), &settings);
        let probe = HttpProbe::new(&target, None).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = rt.block_on(async {
            if plain {
                let r = super::super::reactor::Reactor::new().expect("epoll");
                tokio::spawn(r.clone().drive());
                probe.run(Some(&r)).await
            } else {
                probe.run(None).await
            }
        });
        assert!(out.ok, "{}", out.reason);
        let next = server.join().unwrap();
        assert!(
            matches!(&next, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "the endpoint saw {next:?} after its answer, not a reset (own epoll loop: {plain})"
        );
    }

    #[test]
    fn body_search() {
        assert!(contains(b"status: ok\n", b"ok"));
        assert!(!contains(b"status: fine", b"ok"));
        assert!(contains(b"", b""));
    }

    #[test]
    fn body_search_across_chunks() {
        let found = |chunks: &[&[u8]], needle: &[u8]| {
            let mut f = Finder::new(needle);
            for c in chunks {
                f.feed(c);
            }
            f.found
        };
        assert!(found(&[b"stat", b"us: o", b"k\n"], b"ok"));
        assert!(found(&[b"a", b"b", b"c", b"d"], b"abcd"));
        assert!(found(&[b"xxab", b"cdyy"], b"abcd"));
        assert!(!found(&[b"ab", b"xcd"], b"abcd"));
        assert!(!found(&[b"status: o", b"", b"K"], b"ok"));
        assert!(found(&[b""], b""));
        // Only the first BODY_LIMIT bytes count.
        let big = vec![b'x'; BODY_LIMIT - 1];
        assert!(found(&[&big, b"ok"], b"o"));
        assert!(!found(&[&big, b"ok"], b"ok"));
    }
}
