//! The query log (SPEC "Observability"): `[log] queries = "off" | "all" | "sample:N"` picks
//! which queries are logged; they go out as one line each on stderr (text or JSON, like the
//! rest of the log), or, with `[log] dnstap = "unix:PATH" | "file:PATH"`, as dnstap
//! AUTH_QUERY/AUTH_RESPONSE messages over Frame Streams ([`dnstap`], [`framestream`]).
//!
//! Logging never blocks answering. A DNS thread copies the query and response bytes, the
//! addresses, two timestamps and what answered (policy, service) into an [`Entry`] and hands
//! it to a bounded queue with `try_send`; one writer thread does everything else (parsing for
//! the lines, protobuf, the sockets and files). When the queue is full, or the sink is gone
//! (a collector not listening, a file that cannot be opened), entries are dropped and counted
//! in `meridian_querylog_dropped_total{sink}`. A unix-socket sink is connected again by
//! itself, with a backoff.
//!
//! The transports' side (whether a query is logged, making the [`Entry`] from the query's
//! outcome) is `answer::log`: the server takes this log as a [`LogHandle`]
//! ([`QueryLog::handle`]) and never imports this module. With queries off, the query path
//! pays one relaxed load and a branch (`answer::log::Tap::begin`).
//!
//! Reload: the writer thread follows the served snapshot, so `queries` (and the sample rate)
//! and `dnstap` apply on reload, within a quarter of a second. `format` is the format of the
//! whole log, set up once at start with the tracing subscriber: changing it needs a restart
//! (a reload says so in the log). A dnstap file moved away (log rotation) is noticed at the
//! next reload, which ends the old stream with STOP and starts a new file.

pub mod dnstap;
pub mod framestream;
pub mod line;

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::rr::Name;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

use crate::answer::log::{LogHandle, QuerySink};
/// The `[log]` values and their parsers live with the schema (`config::log`), which checks
/// them without importing this module.
pub use crate::config::log::{
    check, parse_dnstap, parse_format, parse_queries, DnstapTarget, Format,
};
use crate::config::LoadedConfig;
use crate::snapshot::{SharedSnapshot, Snapshot};

// ---------------------------------------------------------------------------------------------
// Settings

/// The `[log]` section, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    pub format: Format,
    /// Log one query in `every`; 0 = off, 1 = all.
    pub every: u32,
    pub dnstap: Option<DnstapTarget>,
}

impl Settings {
    /// The settings of a checked config (values that fail the checks fall back to defaults,
    /// which cannot happen for a config that loaded).
    pub fn from_config(c: &LoadedConfig) -> Settings {
        let Some(log) = &c.config.log else {
            return Settings::default();
        };
        let dir = c.path.parent().unwrap_or(Path::new("."));
        let dnstap = log
            .dnstap
            .as_ref()
            .and_then(|d| parse_dnstap(d.get_ref(), dir).ok());
        // Naming a dnstap sink means wanting queries in it: without `queries`, all of them.
        let default_every = u32::from(dnstap.is_some());
        Settings {
            format: log
                .format
                .as_ref()
                .and_then(|f| parse_format(f.get_ref()).ok())
                .unwrap_or_default(),
            every: log
                .queries
                .as_ref()
                .and_then(|q| parse_queries(q.get_ref()).ok())
                .unwrap_or(default_every),
            dnstap,
        }
    }

    fn sink(&self) -> usize {
        if self.dnstap.is_some() {
            SINK_DNSTAP
        } else {
            SINK_LOG
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics (process-wide, like the rest of /metrics)

const SINK_LOG: usize = 0;
const SINK_DNSTAP: usize = 1;
const SINK_LABELS: [&str; 2] = ["log", "dnstap"];

static DROPPED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static WRITTEN: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Query-log entries dropped so far for `sink` (`"log"` or `"dnstap"`).
pub fn dropped(sink: &str) -> u64 {
    SINK_LABELS
        .iter()
        .position(|s| *s == sink)
        .map_or(0, |i| DROPPED[i].load(Ordering::Relaxed))
}

/// Writes the query-log series into the exposition (`metrics::render`).
pub fn encode_metrics(enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    for (name, help, counters) in [
        (
            "meridian_querylog_dropped",
            "Query-log entries dropped because the queue was full or the sink was slow or gone \
             (sink: log = lines on stderr, dnstap).",
            &DROPPED,
        ),
        (
            "meridian_querylog_written",
            "Query-log entries written (sink: log = lines on stderr, dnstap).",
            &WRITTEN,
        ),
    ] {
        let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (i, sink) in SINK_LABELS.iter().enumerate() {
            let labels = [("sink", *sink)];
            let c = ConstCounter::new(counters[i].load(Ordering::Relaxed));
            prometheus_client::encoding::EncodeMetric::encode(&c, m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn drop_one(sink: usize) {
    DROPPED[sink].fetch_add(1, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------
// The queue

/// The entries, defined with the transports' side of the log (`answer::log`).
pub use crate::answer::log::Entry;

/// Entries the queue holds; past it they are dropped. At 100k queries a second that is
/// 160 ms of a writer that stalls, about 3 MB.
const QUEUE: usize = 16 * 1024;
/// How often the writer thread looks at the snapshot (reloads), reconnects and the stop flag.
const POLL: Duration = Duration::from_millis(250);
/// How long the writer sleeps when the queue is empty.
const TICK: Duration = Duration::from_millis(2);
/// How long it sleeps while logging is off; the stop waits for it (`shutdown` allows 400 ms).
const IDLE_TICK: Duration = Duration::from_millis(50);
/// Longest wait between two tries to reach a dnstap sink.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The query log of one server: the queue, its writer thread, and the sampling rate the DNS
/// threads read.
pub struct QueryLog {
    /// Shared with every [`Tap`](crate::answer::log::Tap) of the server ([`QueryLog::handle`]).
    every: Arc<AtomicU32>,
    /// The sink entries go to now ([`SINK_LOG`] or [`SINK_DNSTAP`]), for counting drops.
    sink: AtomicU8,
    /// `None` wakes the writer (to stop).
    tx: SyncSender<Option<Entry>>,
    stop: AtomicBool,
    done: Mutex<Option<Receiver<()>>>,
}

impl std::fmt::Debug for QueryLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryLog")
            .field("every", &self.every.load(Ordering::Relaxed))
            .finish()
    }
}

impl QueryLog {
    /// Starts the writer thread, configured from the served snapshot and following it.
    pub fn start(shared: SharedSnapshot) -> io::Result<Arc<QueryLog>> {
        let snap = shared.load_full();
        let settings = Settings::from_config(&snap.config);
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let (done_tx, done_rx) = mpsc::channel();
        let log = Arc::new(QueryLog {
            every: Arc::new(AtomicU32::new(settings.every)),
            sink: AtomicU8::new(settings.sink() as u8),
            tx,
            stop: AtomicBool::new(false),
            done: Mutex::new(Some(done_rx)),
        });
        let writer = Writer::new(log.clone(), shared, snap, settings);
        std::thread::Builder::new()
            .name("querylog".into())
            .spawn(move || {
                writer.run(rx);
                let _ = done_tx.send(());
            })?;
        Ok(log)
    }

    /// The log as the server takes it (`server::start`): the sampling rate and this sink.
    pub fn handle(self: &Arc<Self>) -> LogHandle {
        LogHandle {
            every: self.every.clone(),
            sink: self.clone(),
        }
    }

    /// Writes what is queued, ends a dnstap stream (STOP, and FINISH from a collector) and
    /// stops the writer thread; waits at most `wait` for it.
    pub fn shutdown(&self, wait: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.tx.try_send(None);
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(done) = done {
            let _ = done.recv_timeout(wait);
        }
    }

    fn submit(&self, e: Entry) {
        match self.tx.try_send(Some(e)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                drop_one(self.sink.load(Ordering::Relaxed) as usize & 1)
            }
        }
    }
}

impl QuerySink for QueryLog {
    fn submit(&self, e: Entry) {
        QueryLog::submit(self, e)
    }
    fn shutdown(&self, wait: Duration) {
        QueryLog::shutdown(self, wait)
    }
}

// ---------------------------------------------------------------------------------------------
// The writer thread

/// Where entries go.
enum Sink {
    /// Lines on stderr, written a few KiB at a time and only whole lines, so that a write to a
    /// pipe (≤ PIPE_BUF) never interleaves with another thread's log line.
    Log {
        format: Format,
        buf: String,
    },
    Dnstap(DnstapSink),
}

struct DnstapSink {
    target: DnstapTarget,
    writer: Option<framestream::Writer>,
    /// The file's identity when it was opened, to notice rotation.
    file_id: Option<(u64, u64)>,
    retry_at: Instant,
    backoff: Duration,
    /// Logged once per outage rather than at every retry.
    reported: bool,
    scratch: Vec<u8>,
    /// The nested `dnstap.Message` while its envelope is written into `scratch`.
    inner: Vec<u8>,
    /// The envelope's `extra` text (policy and service).
    extra: Vec<u8>,
}

/// Bytes of lines gathered before a write to stderr.
const LINE_CHUNK: usize = 3800;

fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl DnstapSink {
    fn new(target: DnstapTarget) -> DnstapSink {
        DnstapSink {
            target,
            writer: None,
            file_id: None,
            retry_at: Instant::now(),
            backoff: Duration::from_millis(250),
            reported: false,
            scratch: Vec::with_capacity(1024),
            inner: Vec::with_capacity(1024),
            extra: Vec::with_capacity(128),
        }
    }

    /// Connects or opens, unless a retry is not due yet.
    fn ensure(&mut self) -> bool {
        if self.writer.is_some() {
            return true;
        }
        if Instant::now() < self.retry_at {
            return false;
        }
        let opened = match &self.target {
            DnstapTarget::Unix(p) => framestream::Writer::connect_unix(p),
            DnstapTarget::File(p) => {
                // Keep the previous file (one generation) rather than overwrite it.
                if std::fs::metadata(p).is_ok_and(|m| m.len() > 0) {
                    let mut old = p.clone().into_os_string();
                    old.push(".1");
                    let _ = std::fs::rename(p, old);
                }
                let w = framestream::Writer::create_file(p);
                self.file_id = file_id(p);
                w
            }
        };
        match opened {
            Ok(w) => {
                tracing::info!(sink = ?self.target, "dnstap: stream started");
                self.writer = Some(w);
                self.backoff = Duration::from_millis(250);
                self.reported = false;
                true
            }
            Err(e) => {
                if !self.reported {
                    tracing::warn!(sink = ?self.target, error = %e,
                        "dnstap: cannot reach the sink; dropping query-log entries until it can be reached");
                    self.reported = true;
                }
                self.retry_at = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                false
            }
        }
    }

    fn lost(&mut self, e: io::Error) {
        tracing::warn!(sink = ?self.target, error = %e,
            "dnstap: writing failed; reconnecting, entries are dropped meanwhile");
        self.writer = None;
        self.reported = true;
        self.retry_at = Instant::now() + self.backoff;
    }

    fn write(&mut self, e: &Entry, service: Option<&str>, site: Option<&str>, version: &[u8]) {
        if !self.ensure() {
            drop_one(SINK_DNSTAP);
            return;
        }
        let x = dnstap::Exchange {
            transport: e.transport,
            client: e.client,
            server: e.server,
            query_time: e.at,
            response_time: e.at + e.elapsed,
            identity: site.map(str::as_bytes),
            version,
        };
        self.extra.clear();
        let _ = write!(
            self.extra,
            "policy={} service={}",
            e.policy,
            service.unwrap_or("-")
        );
        let (query, response) = (e.query(), e.response());
        let result = (|| {
            let w = self
                .writer
                .as_mut()
                .ok_or_else(|| io::Error::other("no writer"))?;
            for (kind, dns, extra) in [
                (dnstap::MessageType::AuthQuery, query, None),
                (
                    dnstap::MessageType::AuthResponse,
                    response,
                    Some(&self.extra[..]),
                ),
            ] {
                self.scratch.clear();
                x.encode(kind, dns, extra, &mut self.inner, &mut self.scratch);
                w.frame(&self.scratch)?;
            }
            Ok::<(), io::Error>(())
        })();
        match result {
            Ok(()) => {
                WRITTEN[SINK_DNSTAP].fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                drop_one(SINK_DNSTAP);
                self.lost(err);
            }
        }
    }

    fn flush(&mut self) {
        if let Some(w) = self.writer.as_mut() {
            if let Err(e) = w.flush() {
                self.lost(e);
            }
        }
    }

    /// A rotated file (moved away or deleted) gets a new stream in a new file.
    fn reopen_if_rotated(&mut self) {
        if let DnstapTarget::File(p) = &self.target {
            if self.writer.is_some() && file_id(p) != self.file_id {
                tracing::info!(file = %p.display(), "dnstap: file was moved; starting a new one");
                self.finish();
                self.retry_at = Instant::now();
            }
        }
    }

    fn finish(&mut self) {
        if let Some(w) = self.writer.take() {
            if let Err(e) = w.finish() {
                tracing::warn!(sink = ?self.target, error = %e, "dnstap: could not end the stream cleanly");
            }
        }
    }
}

impl Sink {
    fn new(settings: &Settings, format: Format) -> Sink {
        match &settings.dnstap {
            Some(t) => Sink::Dnstap(DnstapSink::new(t.clone())),
            None => Sink::Log {
                format,
                buf: String::with_capacity(LINE_CHUNK + 1024),
            },
        }
    }

    fn write(&mut self, e: Entry, labels: &mut Labels, site: Option<&str>, version: &[u8]) {
        let service = e.service.as_ref().map(|n| labels.of(n));
        match self {
            Sink::Log { format, buf } => {
                match format {
                    Format::Text => line::text(&e, site, service, buf),
                    Format::Json => line::json(&e, site, service, buf),
                }
                WRITTEN[SINK_LOG].fetch_add(1, Ordering::Relaxed);
                if buf.len() >= LINE_CHUNK {
                    Self::flush_lines(buf);
                }
            }
            Sink::Dnstap(d) => d.write(&e, service, site, version),
        }
    }

    fn flush_lines(buf: &mut String) {
        if !buf.is_empty() {
            // stderr going away leaves nothing to report to: the lines are lost either way.
            let _ = io::stderr().lock().write_all(buf.as_bytes());
            buf.clear();
        }
    }

    fn flush(&mut self) {
        match self {
            Sink::Log { buf, .. } => Self::flush_lines(buf),
            Sink::Dnstap(d) => d.flush(),
        }
    }

    fn finish(&mut self) {
        match self {
            Sink::Log { buf, .. } => Self::flush_lines(buf),
            Sink::Dnstap(d) => d.finish(),
        }
    }
}

/// The metric-style label of the last service logged: queries come in runs of a few names,
/// and building the label (lower-casing and formatting a `Name`) took three allocations per
/// entry.
#[derive(Default)]
struct Labels {
    last: Option<(Name, String)>,
}

impl Labels {
    fn of(&mut self, name: &Name) -> &str {
        let hit = self.last.as_ref().is_some_and(|(n, _)| n.eq_case(name));
        if !hit {
            self.last = Some((name.clone(), crate::zone::stats::name_label(name)));
        }
        self.last.as_ref().map_or("-", |(_, l)| l.as_str())
    }
}

struct Writer {
    log: Arc<QueryLog>,
    shared: SharedSnapshot,
    generation: u64,
    settings: Settings,
    /// The log format in force since start.
    format: Format,
    site: Option<String>,
    version: Vec<u8>,
    sink: Sink,
    labels: Labels,
}

impl Writer {
    fn new(log: Arc<QueryLog>, shared: SharedSnapshot, snap: Arc<Snapshot>, s: Settings) -> Self {
        Writer {
            log,
            shared,
            generation: snap.generation,
            format: s.format,
            sink: Sink::new(&s, s.format),
            settings: s,
            site: snap.wire.site_id.clone(),
            version: format!("meridian {}", env!("CARGO_PKG_VERSION")).into_bytes(),
            labels: Labels::default(),
        }
    }

    fn run(mut self, rx: Receiver<Option<Entry>>) {
        if let Sink::Dnstap(d) = &mut self.sink {
            d.ensure();
        }
        let mut last_poll = Instant::now();
        let mut dropped_seen = total_dropped();
        let mut last_drop_report = Instant::now();
        loop {
            // The writer polls rather than blocking on the queue: a blocked receiver must be
            // woken (a futex call on each side) by nearly every entry, which at `all` cost the
            // DNS threads more than the logging itself. A tick of TICK holds a few thousand
            // entries at most, far below QUEUE.
            let mut wrote = false;
            for _ in 0..QUEUE {
                match rx.try_recv() {
                    Ok(Some(e)) => {
                        self.sink
                            .write(e, &mut self.labels, self.site.as_deref(), &self.version);
                        wrote = true;
                    }
                    Ok(None) => {}
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.log.stop.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            }
            if wrote {
                self.sink.flush();
            }
            if self.log.stop.load(Ordering::Relaxed) {
                for e in rx.try_iter().take(QUEUE).flatten() {
                    self.sink
                        .write(e, &mut self.labels, self.site.as_deref(), &self.version);
                }
                break;
            }
            if !wrote {
                // With logging off nothing can arrive but the stop (and a reload that turns it
                // on, seen at the next POLL): no need to wake 500 times a second for it.
                let off = self.log.every.load(Ordering::Relaxed) == 0;
                std::thread::sleep(if off { IDLE_TICK } else { TICK });
            }
            if last_poll.elapsed() >= POLL {
                last_poll = Instant::now();
                self.follow_reload();
                if let Sink::Dnstap(d) = &mut self.sink {
                    d.ensure();
                }
                if last_drop_report.elapsed() >= Duration::from_secs(10) {
                    let now = total_dropped();
                    if now > dropped_seen {
                        tracing::warn!(
                            dropped = now - dropped_seen,
                            "query log: entries dropped in the last 10 s (sink slow or gone)"
                        );
                    }
                    (dropped_seen, last_drop_report) = (now, Instant::now());
                }
            }
        }
        self.sink.finish();
    }

    /// Applies `[log]` of a newly served snapshot.
    fn follow_reload(&mut self) {
        let snap = self.shared.load();
        if snap.generation == self.generation {
            return;
        }
        self.generation = snap.generation;
        self.site = snap.wire.site_id.clone();
        let new = Settings::from_config(&snap.config);
        if new.format != self.format && new.format != self.settings.format {
            tracing::warn!("log.format changed: the new format takes effect after a restart");
        }
        if new.dnstap != self.settings.dnstap {
            self.sink.finish();
            self.sink = Sink::new(&new, self.format);
        } else if let Sink::Dnstap(d) = &mut self.sink {
            d.reopen_if_rotated();
        }
        self.log.every.store(new.every, Ordering::Relaxed);
        self.log.sink.store(new.sink() as u8, Ordering::Relaxed);
        if new.every != self.settings.every || new.dnstap != self.settings.dnstap {
            tracing::info!(every = new.every, dnstap = ?new.dnstap, "query log settings applied");
        }
        self.settings = new;
    }
}

fn total_dropped() -> u64 {
    DROPPED.iter().map(|c| c.load(Ordering::Relaxed)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_values() {
        assert_eq!(parse_queries("off"), Ok(0));
        assert_eq!(parse_queries("all"), Ok(1));
        assert_eq!(parse_queries("sample:100"), Ok(100));
        for bad in [
            "sample:0",
            "sample:",
            "sample:-1",
            "some",
            "ALL",
            "sample:1.5",
        ] {
            assert!(parse_queries(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dnstap_values() {
        let dir = Path::new("/etc/meridian");
        assert_eq!(
            parse_dnstap("unix:/run/meridian/dnstap.sock", dir),
            Ok(DnstapTarget::Unix("/run/meridian/dnstap.sock".into()))
        );
        assert_eq!(
            parse_dnstap("file:q.dnstap", dir),
            Ok(DnstapTarget::File("/etc/meridian/q.dnstap".into()))
        );
        for bad in ["", "unix:", "tcp:127.0.0.1:6000", "/var/log/x"] {
            assert!(parse_dnstap(bad, dir).is_err(), "{bad}");
        }
    }

    #[test]
    fn format_values() {
        assert_eq!(parse_format("json"), Ok(Format::Json));
        assert!(parse_format("JSON").is_err());
    }
}
