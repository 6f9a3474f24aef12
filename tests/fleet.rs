#![cfg(feature = "fleet")]
//! `[fleet]` end to end (SPEC "Fleet", "Drains survive restarts", `[health.NAME] source`):
//! a real etcd (Debian `etcd-server`) on loopback ports with its data in a temp dir, three real
//! `meridian serve` processes (sites a, b, c, probing from 127.0.0.11/12/13), and one HTTP
//! health server in this test that answers by path and by the peer address of the probe, so
//! "failing only from a's view" is real. Answers are read with real DNS queries over UDP.
//!
//! Trust boundaries (SPEC "Trust boundaries", Fleet): reports forged with `etcdctl` (Debian
//! etcd-client) without a lease, under another site's name, malformed, from a site that is not
//! an endpoint's prober, under a site id ground to rank first everywhere, invalid drain
//! records; and docs/fleet.md's RBAC recipe run with etcd auth on.
//!
//! Answers count only as a NOERROR reply to the query sent (ID and question), so a site that
//! is down or failing never passes for one that dropped an endpoint; waits are polls with
//! deadlines.
//!
//! Measured and printed (`cargo test --features fleet --test fleet -- --nocapture`): verdict
//! change → every site, drain → every site, prober takeover, rejoin after etcd returns,
//! membership after SIGKILL/SIGTERM, and the probe requests per second the health server saw
//! with and without `probers`.
//!
//! The tests take a lock so that only one fleet runs at a time: their timings assume the two
//! cores are not shared with two other fleets.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{free_port, serve_command, wait_for, HealthStub, ServerProcess, EXAMPLE_ZONE};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::Value;

const TOKEN: &str = "fleet-t0ken";
const SITES: [(&str, &str); 3] = [
    ("a", "127.0.0.11"),
    ("b", "127.0.0.12"),
    ("c", "127.0.0.13"),
];
/// Probe interval and rise/fall of the tests' profile: single-site failover is within
/// fall × interval + timeout = 2.5 s (SPEC: 3 s).
const INTERVAL: Duration = Duration::from_secs(1);
const FAILOVER: Duration = Duration::from_secs(3);
const REPORT_TTL: Duration = Duration::from_secs(2);
/// The fleet's bound on one etcd call (src/fleet/member.rs `RPC_TIMEOUT`).
const RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// The turn of a test that runs a fleet (see the top of the file).
fn one_fleet_at_a_time() -> MutexGuard<'static, ()> {
    static ONE_FLEET_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_FLEET_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// etcd

struct Etcd {
    process: Option<ServerProcess>,
    dir: PathBuf,
    client: u16,
    peer: u16,
}

impl Etcd {
    fn start(dir: &Path) -> Etcd {
        let mut e = Etcd {
            process: None,
            dir: dir.to_path_buf(),
            client: free_port(),
            peer: free_port(),
        };
        e.spawn();
        e
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let mut process = ServerProcess::try_spawn(
            Command::new("etcd")
                .args(["--name", "t", "--data-dir"])
                .arg(&self.dir)
                .args(["--listen-client-urls", &self.url()])
                .args(["--advertise-client-urls", &self.url()])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("t={peer}")])
                .args(["--log-level", "error"]),
        )
        .expect("etcd (Debian etcd-server) must be installed: .ci/run installs it");
        let health: SocketAddr = ([127, 0, 0, 1], self.client).into();
        process.wait_until("etcd up", Duration::from_secs(20), |_| {
            http(health, "GET", "/health", None)
                .1
                .contains("true")
                .then_some(())
        });
        self.process = Some(process);
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// `etcdctl` (Debian etcd-client) against this etcd, as `user` ("name:password") if
    /// given, with `stdin` as the value when the command reads one: (success, stdout, stderr).
    fn ctl(
        &self,
        user: Option<&str>,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> (bool, String, String) {
        use std::io::Write;
        use std::process::Stdio;
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url(), "--command-timeout", "5s"]);
        if let Some(u) = user {
            cmd.args(["--user", u]);
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl (Debian etcd-client) must be installed: .ci/run installs it");
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(stdin.unwrap_or_default())
                .expect("etcdctl stdin");
        }
        let out = child.wait_with_output().expect("etcdctl ran");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `etcdctl` that must succeed.
    fn ctl_ok(&self, user: Option<&str>, args: &[&str], stdin: Option<&[u8]>) -> String {
        let (ok, out, err) = self.ctl(user, args, stdin);
        assert!(ok, "etcdctl {args:?}: {err}");
        out
    }

    /// A lease of `ttl` seconds: its id in hex, as etcdctl takes it.
    fn lease(&self, ttl: u32) -> String {
        let out = self.ctl_ok(None, &["lease", "grant", &ttl.to_string()], None);
        // "lease 694d7a8a3b3f5c0a granted with TTL(60s)"
        out.split_whitespace().nth(1).expect("lease id").to_string()
    }

    /// Puts `value` at `key`, with `lease` when given.
    fn put(&self, key: &str, value: &[u8], lease: Option<&str>) {
        let mut args = vec!["put".to_string(), key.to_string()];
        if let Some(l) = lease {
            args.push(format!("--lease={l}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctl_ok(None, &args, Some(value));
    }
}

// ---------------------------------------------------------------------------------------------
// The sites

struct Site {
    id: &'static str,
    source: &'static str,
    dir: PathBuf,
    admin: SocketAddr,
    dns: SocketAddr,
    process: Option<ServerProcess>,
}

/// What a fleet of the tests looks like: `fleet` is the `[fleet]` table or empty for none.
fn config(site: &Site, h: &HealthStub, endpoints: &[(&str, &str)], fleet: &str) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|(addr, path)| format!("  {{ address = \"{addr}\", check = \"{}\" }},", h.url(path)))
        .collect();
    format!(
        r#"[server]
listen = ["{dns}"]
zones = "zones"
udp_sockets = 1
state_dir = "state"

[site]
id = "{id}"

[admin]
listen = "{admin}"
token = "{TOKEN}"

[health.web]
kind = "http"
interval = "1s"
timeout = "500ms"
rise = 2
fall = 2
source = "{source}"

[[service]]
name = "www.example.com"
policy = "round-robin"
max_answers = 16
health = "web"
when_all_down = "empty"
endpoints = [
{eps}
]
{fleet}
"#,
        dns = site.dns,
        id = site.id,
        admin = site.admin,
        source = site.source,
        eps = eps.join("\n"),
    )
}

fn fleet_table(etcd: &Etcd, prefix: &str, quorum: &str, probers: u32) -> String {
    fleet_table_ttl(etcd, prefix, quorum, probers, REPORT_TTL)
}

fn fleet_table_ttl(etcd: &Etcd, prefix: &str, quorum: &str, probers: u32, ttl: Duration) -> String {
    format!(
        "[fleet]\netcd = [\"{}\"]\nprefix = \"{prefix}\"\nquorum = \"{quorum}\"\nprobers = {probers}\nreport_ttl = \"{}s\"\n",
        etcd.url(),
        ttl.as_secs()
    )
}

impl Site {
    fn new(root: &Path, id: &'static str, source: &'static str) -> Site {
        let dir = root.join(id);
        std::fs::create_dir_all(dir.join("zones")).expect("mkdir");
        std::fs::write(dir.join("zones/example.com.zone"), EXAMPLE_ZONE).expect("write zone");
        Site {
            id,
            source,
            dir,
            admin: ([127, 0, 0, 1], free_port()).into(),
            dns: ([127, 0, 0, 1], free_port()).into(),
            process: None,
        }
    }

    fn start(&mut self, config: &str) {
        self.stop();
        std::fs::write(self.dir.join("meridian.toml"), config).expect("write config");
        let mut process = ServerProcess::spawn(
            serve_command(&self.dir.join("meridian.toml")).env("MERIDIAN_LOG", "info"),
        );
        let admin = self.admin;
        process.wait_until(
            &format!("site {} up", self.id),
            Duration::from_secs(20),
            |_| (http(admin, "GET", "/status", None).0 == 200).then_some(()),
        );
        self.process = Some(process);
    }

    /// What the running serve has logged.
    fn log(&self) -> String {
        self.process
            .as_ref()
            .map(ServerProcess::stderr)
            .unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(5));
        }
    }

    fn sigkill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    fn status(&self) -> Value {
        let (code, body) = http(self.admin, "GET", "/status", None);
        assert_eq!(code, 200, "site {}: /status {code}", self.id);
        serde_json::from_str(&body).expect("/status is JSON")
    }

    fn connected(&self) -> bool {
        self.status()["fleet"]["connected"] == true
    }

    /// The value of one series of `/metrics`, e.g. `meridian_fleet_reports_ignored_total{reason="no_lease"}`.
    fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = http(self.admin, "GET", "/metrics", None);
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// `/status` `fleet.sites`: the sites whose reports count here.
    fn fleet_sites(&self) -> Vec<String> {
        self.status()["fleet"]["sites"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    /// Rewrites this site's config and reloads it through the admin API.
    fn reload(&self, config: &str) {
        std::fs::write(self.dir.join("meridian.toml"), config).expect("write config");
        let (code, body) = http(self.admin, "POST", "/api/v1/reload", None);
        assert_eq!(code, 200, "site {}: reload: {body}", self.id);
    }

    fn metric_connected(&self) -> Option<String> {
        let (_, body) = http(self.admin, "GET", "/metrics", None);
        body.lines()
            .find(|l| l.starts_with("meridian_fleet_connected"))
            .map(str::to_string)
    }

    /// The A records of www.example.com this site answers, over UDP; `None` unless the
    /// reply is a NOERROR response to this very query (its ID, its question), so a site that
    /// is down, SERVFAILs or answers something else never passes for one that dropped an
    /// endpoint.
    fn answers(&self) -> Option<BTreeSet<String>> {
        let id = rand_id();
        let name = Name::from_ascii("www.example.com.").expect("name");
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(name.clone(), RecordType::A));
        let bytes = m.to_vec().expect("encode query");
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        sock.send_to(&bytes, self.dns).ok()?;
        let mut buf = [0u8; 4096];
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        let r = Message::from_vec(&buf[..n]).ok()?;
        let asked = r
            .queries
            .first()
            .is_some_and(|q| q.name() == &name && q.query_type() == RecordType::A);
        if r.id != id
            || r.message_type != MessageType::Response
            || r.response_code != ResponseCode::NoError
            || !asked
        {
            return None;
        }
        Some(
            r.answers
                .iter()
                .filter_map(|rr| match &rr.data {
                    RData::A(a) => Some(a.0.to_string()),
                    _ => None,
                })
                .collect(),
        )
    }

    fn endpoint(&self, addr: &str) -> Value {
        let st = self.status();
        st["services"][0]["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["address"] == addr)
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn drain(&self, path: &str, addr: &str) -> (u16, String) {
        http(
            self.admin,
            "POST",
            path,
            Some(&format!(
                r#"{{"service": "www.example.com", "endpoint": "{addr}"}}"#
            )),
        )
    }
}

/// A query ID no earlier query of this test process used recently.
fn rand_id() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .wrapping_mul(40503)
        ^ (std::process::id() as u16)
}

fn sites(root: &Path) -> Vec<Site> {
    SITES
        .iter()
        .map(|(id, src)| Site::new(root, id, src))
        .collect()
}

/// (Re)starts every site with [`config`] for its part.
fn start_all(sites: &mut [Site], h: &HealthStub, endpoints: &[(&str, &str)], fleet: &str) {
    for site in sites {
        let c = config(site, h, endpoints, fleet);
        site.start(&c);
    }
}

/// `addr` is in the site's NOERROR answer.
fn has(s: &Site, addr: &str) -> bool {
    s.answers().is_some_and(|a| a.contains(addr))
}

/// `addr` left the site's answer while the site still answers NOERROR with another endpoint:
/// a site that is down or failing is not "without `addr`".
fn lacks(s: &Site, addr: &str) -> bool {
    s.answers()
        .is_some_and(|a| !a.is_empty() && !a.contains(addr))
}

/// One HTTP/1.1 request with `Connection: close`: status and body (0 when nothing answered).
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    common::http_exchange(addr, &req).map_or((0, String::new()), |(code, _, body)| (code, body))
}

fn all_connected(sites: &[Site]) -> bool {
    sites.iter().all(|s| s.connected())
}

/// Waits (up to `limit`) until, over a window of two probe intervals, each of `paths` is
/// probed from exactly one source; returns who probes each and that window's rates.
#[allow(clippy::type_complexity)]
fn one_prober_each(
    h: &HealthStub,
    paths: &[&str],
    limit: Duration,
) -> Result<(HashMap<String, IpAddr>, HashMap<(String, IpAddr), f64>), String> {
    let t0 = Instant::now();
    loop {
        let r = rates(h, INTERVAL * 2);
        let mut who = HashMap::new();
        let mut wrong = Vec::new();
        for path in paths {
            let from: Vec<IpAddr> = r
                .iter()
                .filter(|((p, _), rate)| p == path && **rate > 0.0)
                .map(|((_, ip), _)| *ip)
                .collect();
            match from[..] {
                [one] => {
                    who.insert(path.to_string(), one);
                }
                _ => wrong.push(format!("{path} probed from {from:?}")),
            }
        }
        if wrong.is_empty() {
            return Ok((who, r));
        }
        if t0.elapsed() > limit {
            return Err(format!(
                "not one prober per endpoint within {limit:?}: {}",
                wrong.join("; ")
            ));
        }
    }
}

/// Probe requests per second over `window`, per (path, source).
fn rates(h: &HealthStub, window: Duration) -> HashMap<(String, IpAddr), f64> {
    let before = h.hits();
    std::thread::sleep(window);
    let after = h.hits();
    after
        .into_iter()
        .map(|(k, n)| {
            let d = n - before.get(&k).copied().unwrap_or(0);
            (k, d as f64 / window.as_secs_f64())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------

/// Quorum, a fleet-wide failure, a partition from etcd and the rejoin.
#[test]
fn quorum_failover_and_partition() {
    let _one = one_fleet_at_a_time();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut etcd = Etcd::start(&tmp.path().join("etcd"));
    let h = HealthStub::start();
    // .1 fails only as a sees it; .3 fails for all when told to; .2 is always fine.
    h.set_failing("/only-a", Some("127.0.0.11"), true);
    let eps = [
        ("192.0.2.1", "/only-a"),
        ("192.0.2.2", "/ok"),
        ("192.0.2.3", "/toggle"),
    ];
    let mut s = sites(tmp.path());

    // Without a fleet each site has its own view: .1 leaves only a's answers.
    start_all(&mut s, &h, &eps, "");
    let settled = wait_for(Duration::from_secs(10), || {
        lacks(&s[0], "192.0.2.1") && has(&s[1], "192.0.2.1") && has(&s[2], "192.0.2.1")
    });
    assert!(
        settled.is_some(),
        "no fleet: .1 should leave a's answers only"
    );
    // The sources are the configured ones: the health server sees each site's address.
    // Within two intervals: the sites start one after another and each spreads its first
    // probes over an interval, so a's second failure can come before c's first probe.
    for (_, src) in SITES {
        let ip: IpAddr = src.parse().expect("ip");
        let seen = wait_for(2 * INTERVAL, || {
            h.hits().keys().any(|(_, from)| *from == ip)
        });
        assert!(seen.is_some(), "no probe came from {src}");
    }
    let r0 = rates(&h, Duration::from_secs(3));
    let per_endpoint0: f64 = r0.values().sum::<f64>() / eps.len() as f64;

    // majority: a's failure alone does not take .1 out of anyone's answers.
    let prefix = "/meridian/quorum";
    start_all(&mut s, &h, &eps, &fleet_table(&etcd, prefix, "majority", 0));
    assert!(
        wait_for(Duration::from_secs(10), || all_connected(&s)).is_some(),
        "sites did not connect to etcd"
    );
    // Long enough for a to see .1 down on its own (rise/fall 2 at 1 s).
    let a_down = wait_for(Duration::from_secs(8), || {
        s[0].endpoint("192.0.2.1")["fleet"]["own_verdict"] == false
    });
    assert!(
        a_down.is_some(),
        "a never saw .1 down: {}",
        s[0].endpoint("192.0.2.1")
    );
    // Every site has a's verdict: 2 of 3 healthy.
    let counted = wait_for(Duration::from_secs(5), || {
        s.iter().all(|x| {
            let f = &x.endpoint("192.0.2.1")["fleet"];
            f["reporting_sites"] == 3 && f["healthy_sites"] == 2
        })
    });
    assert!(counted.is_some(), "a's verdict did not reach every site");
    for site in &s {
        assert!(
            has(site, "192.0.2.1"),
            "majority: .1 left {}'s answers",
            site.id
        );
        let f = &site.endpoint("192.0.2.1")["fleet"];
        assert_eq!(f["reporting_sites"], 3, "{f}");
        assert_eq!(f["healthy_sites"], 2, "{f}");
        assert_eq!(f["healthy"], true, "{f}");
    }
    let st = s[1].status();
    assert_eq!(st["fleet"]["connected"], true);
    assert!(st["fleet"]["since"].is_string(), "{}", st["fleet"]);
    assert_eq!(
        s[1].metric_connected().as_deref(),
        Some("meridian_fleet_connected 1")
    );

    // A failure every site sees leaves every site's answers within failover + 1 s.
    h.set_failing("/toggle", None, true);
    let t0 = Instant::now();
    let mut gone: [Option<Duration>; 3] = [None; 3];
    let all_gone = wait_for(FAILOVER + Duration::from_secs(1), || {
        for (i, site) in s.iter().enumerate() {
            if gone[i].is_none() && lacks(site, "192.0.2.3") {
                gone[i] = Some(t0.elapsed());
            }
        }
        gone.iter().all(Option::is_some)
    });
    let times: Vec<Duration> = gone.iter().flatten().copied().collect();
    println!("fleet: endpoint failing for all: left answers at a/b/c after {gone:?}");
    assert!(
        all_gone.is_some(),
        "an endpoint failing for all did not leave every site within {:?}: {gone:?}",
        FAILOVER + Duration::from_secs(1)
    );
    let spread = times.iter().max().copied().unwrap_or_default()
        - times.iter().min().copied().unwrap_or_default();
    println!("fleet: failing for all → gone from every site: {spread:?} between the first and the last site");
    h.set_failing("/toggle", None, false);
    assert!(
        wait_for(FAILOVER + Duration::from_secs(1), || s
            .iter()
            .all(|x| has(x, "192.0.2.3")))
        .is_some(),
        ".3 did not come back"
    );

    // etcd stopped: every site keeps answering, says it is disconnected, and uses its own
    // view (a drops .1, b and c keep it).
    etcd.stop();
    let t0 = Instant::now();
    let cut = wait_for(Duration::from_secs(8), || s.iter().all(|x| !x.connected()));
    println!("fleet: etcd stopped: all sites disconnected after {cut:?}");
    assert!(cut.is_some(), "sites did not notice etcd is gone");
    // (a's own view of .3 may trail the fleet's by a probe after .3 came back: waited for
    // too, so that a still answers something when .2 is drained below.)
    assert!(
        wait_for(Duration::from_secs(5), || lacks(&s[0], "192.0.2.1")
            && has(&s[0], "192.0.2.3")
            && has(&s[1], "192.0.2.1")
            && has(&s[2], "192.0.2.1"))
        .is_some(),
        "partitioned sites should answer from their own views"
    );
    for site in &s {
        assert!(has(site, "192.0.2.2"), "{} stopped answering", site.id);
        let st = site.status();
        assert_eq!(st["fleet"]["connected"], false);
        assert!(st["fleet"]["since"].is_string());
        assert_eq!(
            site.metric_connected().as_deref(),
            Some("meridian_fleet_connected 0")
        );
    }
    println!(
        "fleet: partition handled {:?} after etcd stopped",
        t0.elapsed()
    );
    // A drain made at a during the partition holds at a at once, and reaches the others
    // when a rejoins (etcd's older copy does not undo it).
    let (code, body) = s[0].drain("/api/v1/drain", "192.0.2.2");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"fleet\":false"), "{body}");
    assert!(
        lacks(&s[0], "192.0.2.2"),
        "a: drain during the partition: {:?}",
        s[0].answers()
    );
    assert!(has(&s[1], "192.0.2.2"), "b: {:?}", s[1].answers());

    // etcd back: the sites rejoin by themselves and converge within report_ttl.
    etcd.spawn();
    let t0 = Instant::now();
    // Rejoined and converged within report_ttl of etcd answering again (SPEC), one deadline
    // for both, from the moment etcd answered its health check. Converged means both
    // directions: the others' health reached a, and a's partition-time drain reached the
    // others (a writes it on rejoin, so it can trail the health view by a round trip).
    let mut joined = None;
    let converged = wait_for(REPORT_TTL, || {
        if joined.is_none() && all_connected(&s) {
            joined = Some(t0.elapsed());
        }
        joined.is_some()
            && s.iter()
                .all(|x| has(x, "192.0.2.1") && lacks(x, "192.0.2.2"))
    });
    println!("fleet: etcd back: rejoined after {joined:?}, converged after {converged:?}");
    assert!(
        joined.is_some(),
        "sites did not rejoin within {REPORT_TTL:?}"
    );
    assert!(
        converged.is_some(),
        "sites did not converge within {REPORT_TTL:?} of etcd's return"
    );
    for site in &s {
        assert!(
            lacks(site, "192.0.2.2"),
            "{}: a's partition-time drain not applied",
            site.id
        );
    }
    let (code, body) = s[1].drain("/api/v1/undrain", "192.0.2.2");
    assert_eq!(code, 200, "{body}");
    assert!(
        wait_for(Duration::from_secs(1), || s
            .iter()
            .all(|x| has(x, "192.0.2.2")))
        .is_some(),
        "undrain after the rejoin"
    );

    // etcd hung (SIGSTOP: connections stay open, nothing answers), the harder partition:
    // answering never pauses, and the sites give up on it within report_ttl + the RPC timeout.
    let signal = |sig| etcd.process.as_ref().expect("etcd running").signal(sig);
    signal(libc::SIGSTOP);
    let mut slowest = Duration::ZERO;
    let cut = wait_for(REPORT_TTL + Duration::from_secs(4), || {
        for site in &s {
            let q = Instant::now();
            assert!(
                has(site, "192.0.2.2"),
                "{} stopped answering with etcd hung",
                site.id
            );
            slowest = slowest.max(q.elapsed());
        }
        s.iter().all(|x| !x.connected())
    });
    println!(
        "fleet: etcd hung: all sites disconnected after {cut:?}; slowest DNS answer meanwhile {slowest:?}"
    );
    signal(libc::SIGCONT);
    assert!(cut.is_some(), "sites did not give up on a hung etcd");
    assert!(
        wait_for(Duration::from_secs(10), || all_connected(&s)).is_some(),
        "sites did not rejoin after etcd resumed"
    );

    // all: one site's failure is enough to take .1 out of every site's answers. Started
    // healthy, so that the moment a's own verdict flips can be told from the moment b and c
    // follow it: the difference is the trip through etcd.
    h.set_failing("/only-a", Some("127.0.0.11"), false);
    start_all(&mut s, &h, &eps, &fleet_table(&etcd, prefix, "all", 0));
    assert!(
        wait_for(Duration::from_secs(10), || all_connected(&s)
            && s.iter().all(|x| has(x, "192.0.2.1")))
        .is_some(),
        "all: .1 should start in every site's answers"
    );
    h.set_failing("/only-a", Some("127.0.0.11"), true);
    let t0 = Instant::now();
    let mut gone: [Option<Duration>; 3] = [None; 3];
    let out = wait_for(FAILOVER + Duration::from_secs(1), || {
        for (i, site) in s.iter().enumerate() {
            if gone[i].is_none() && lacks(site, "192.0.2.1") {
                gone[i] = Some(t0.elapsed());
            }
        }
        gone.iter().all(Option::is_some) && s.iter().all(|x| has(x, "192.0.2.2"))
    });
    println!("fleet: quorum all, failing from a only: left answers at a/b/c after {gone:?}");
    assert!(
        out.is_some(),
        "all: .1 should leave every site's answers: {gone:?}"
    );
    if let [Some(a), Some(b), Some(c)] = gone {
        println!(
            "fleet: verdict change at one site → every site: {:?}",
            b.max(c).saturating_sub(a)
        );
    }
    println!("fleet: probe requests/s per endpoint without probers (3 sites): {per_endpoint0:.2}");
}

/// `probers = 1`: one site per endpoint, a takeover after SIGKILL, verdicts kept right.
#[test]
fn probers_share_and_takeover() {
    let _one = one_fleet_at_a_time();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut etcd = Etcd::start(&tmp.path().join("etcd"));
    let h = HealthStub::start();
    let eps: Vec<(String, String)> = (1..=6)
        .map(|i| (format!("192.0.2.{i}"), format!("/p{i}")))
        .collect();
    // One endpoint is down for everyone: its verdict must stay "down" through the takeover.
    h.set_failing("/p6", None, true);
    let eps_ref: Vec<(&str, &str)> = eps.iter().map(|(a, p)| (a.as_str(), p.as_str())).collect();
    let mut s = sites(tmp.path());
    start_all(
        &mut s,
        &h,
        &eps_ref,
        &fleet_table(&etcd, "/meridian/probers", "majority", 1),
    );
    assert!(wait_for(Duration::from_secs(10), || all_connected(&s)).is_some());
    // Assignments settle once every site has seen the others.
    let paths: Vec<&str> = eps.iter().map(|(_, p)| p.as_str()).collect();
    let (prober_of, r) = one_prober_each(&h, &paths, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("probers = 1: {e}"));
    let per_endpoint1 = r.values().sum::<f64>() / eps.len() as f64;
    println!("fleet: probe requests/s per endpoint with probers = 1 (3 sites): {per_endpoint1:.2}");
    // /status says who probes what.
    let f = &s[1].endpoint("192.0.2.1")["fleet"];
    assert_eq!(f["probers"].as_array().map(Vec::len), Some(1), "{f}");
    for site in &s {
        assert!(lacks(site, "192.0.2.6"), "{}: .6 is down for all", site.id);
        assert!(has(site, "192.0.2.1"), "{}: .1 is up", site.id);
    }

    // SIGKILL the site that probes /p1; another takes over within report_ttl + interval.
    let victim_ip = prober_of["/p1"];
    let victim = s
        .iter()
        .position(|x| x.source.parse::<IpAddr>().ok() == Some(victim_ip))
        .expect("the prober is one of the sites");
    let before = h.hits();
    s[victim].sigkill();
    // report_ttl + one interval (SPEC), plus etcd's own lease-expiry sweep (every 500 ms)
    // and the prober's tick phase jitter.
    let limit = REPORT_TTL + INTERVAL + Duration::from_secs(1);
    let took = wait_for(limit, || {
        h.hits().iter().any(|((p, ip), n)| {
            p == "/p1"
                && *ip != victim_ip
                && *n > before.get(&(p.clone(), *ip)).copied().unwrap_or(0)
        })
    });
    println!(
        "fleet: prober takeover after SIGKILL: {took:?} (report_ttl {REPORT_TTL:?} + interval {INTERVAL:?})"
    );
    assert!(took.is_some(), "no site took over /p1 within {limit:?}");
    // Every endpoint the dead site probed is probed again, and the verdicts stayed right.
    let (after, _) = one_prober_each(&h, &paths, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("after the takeover: {e}"));
    for (path, from) in &after {
        assert_ne!(*from, victim_ip, "{path} still probed by the dead site");
    }
    for (i, site) in s.iter().enumerate() {
        if i == victim {
            continue;
        }
        let a = site
            .answers()
            .unwrap_or_else(|| panic!("{}: no NOERROR answer", site.id));
        for n in 1..=5 {
            assert!(a.contains(&format!("192.0.2.{n}")), "{}: {a:?}", site.id);
        }
        assert!(!a.contains("192.0.2.6"), "{}: .6 came back: {a:?}", site.id);
    }

    // etcd away: each remaining site probes every endpoint itself again (SPEC: its own view).
    etcd.stop();
    let alive: Vec<IpAddr> = s
        .iter()
        .filter(|x| x.process.is_some())
        .map(|x| x.source.parse().expect("ip"))
        .collect();
    let t0 = Instant::now();
    let everything = loop {
        let r = rates(&h, INTERVAL * 2);
        let missing: Vec<String> = paths
            .iter()
            .flat_map(|p| alive.iter().map(move |ip| (p, ip)))
            .filter(|(p, ip)| r.get(&(p.to_string(), **ip)).copied().unwrap_or(0.0) <= 0.0)
            .map(|(p, ip)| format!("{p} from {ip}"))
            .collect();
        if missing.is_empty() {
            break Ok(t0.elapsed());
        }
        if t0.elapsed() > REPORT_TTL + RPC_TIMEOUT + INTERVAL * 4 {
            break Err(missing);
        }
    };
    println!(
        "fleet: etcd away with probers = 1: every site probes everything after {everything:?}"
    );
    assert!(
        everything.is_ok(),
        "with etcd away each site should probe every endpoint: not probed: {everything:?}"
    );
}

/// A partial drain through one site's API reaches the others with its share (SPEC "Partial
/// drains persist and travel through `[fleet]` like full ones"), and so does raising it.
#[test]
fn partial_drains_travel_with_their_share() {
    let _one = one_fleet_at_a_time();
    let tmp = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(&tmp.path().join("etcd"));
    let h = HealthStub::start();
    let eps = [("192.0.2.1", "/ok"), ("192.0.2.2", "/ok")];
    let mut s = sites(tmp.path());
    let fleet = fleet_table(&etcd, "/meridian/partial", "majority", 0);
    start_all(&mut s, &h, &eps, &fleet);
    assert!(wait_for(Duration::from_secs(10), || all_connected(&s)).is_some());
    for share in [0.25, 0.5] {
        let (code, body) = http(
            s[1].admin,
            "POST",
            "/api/v1/drain",
            Some(&format!(
                r#"{{"service": "www.example.com", "endpoint": "192.0.2.2", "share": {share}}}"#
            )),
        );
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"fleet\":true"), "{body}");
        let reached = wait_for(Duration::from_secs(2), || {
            [&s[0], &s[2]].iter().all(|x| {
                let e = x.endpoint("192.0.2.2");
                e["drain_share"] == share && e["drained"] == false
            })
        });
        assert!(reached.is_some(), "share {share} did not reach a and c");
    }
}

/// A drain through one site's API reaches the others within 1 s and survives restarting all.
#[test]
fn drains_are_fleet_wide_and_survive_restarts() {
    let _one = one_fleet_at_a_time();
    let tmp = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(&tmp.path().join("etcd"));
    let h = HealthStub::start();
    let eps = [("192.0.2.1", "/ok"), ("192.0.2.2", "/ok")];
    let mut s = sites(tmp.path());
    let fleet = fleet_table(&etcd, "/meridian/drains", "majority", 0);
    start_all(&mut s, &h, &eps, &fleet);
    assert!(wait_for(Duration::from_secs(10), || all_connected(&s)).is_some());
    assert!(wait_for(Duration::from_secs(5), || s
        .iter()
        .all(|x| has(x, "192.0.2.2")))
    .is_some());

    let (code, body) = s[1].drain("/api/v1/drain", "192.0.2.2");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"fleet\":true"), "{body}");
    let t0 = Instant::now();
    let applied = wait_for(Duration::from_secs(1), || {
        lacks(&s[0], "192.0.2.2") && lacks(&s[2], "192.0.2.2")
    });
    println!(
        "fleet: drain through b → out of a's and c's answers after {:?}",
        t0.elapsed()
    );
    assert!(applied.is_some(), "drain not applied by a and c within 1 s");

    // Restart every site, with the local drain files gone: etcd is the store.
    for site in s.iter_mut() {
        site.stop();
        let _ = std::fs::remove_dir_all(site.dir.join("state"));
    }
    start_all(&mut s, &h, &eps, &fleet);
    assert!(wait_for(Duration::from_secs(10), || all_connected(&s)).is_some());
    for site in &s {
        assert_eq!(site.endpoint("192.0.2.2")["drained"], true, "{}", site.id);
        assert!(
            lacks(site, "192.0.2.2"),
            "{} answers a drained endpoint",
            site.id
        );
        assert!(has(site, "192.0.2.1"), "{}", site.id);
    }

    // Undrain through c: back at a and b within 1 s.
    let (code, body) = s[2].drain("/api/v1/undrain", "192.0.2.2");
    assert_eq!(code, 200, "{body}");
    let t0 = Instant::now();
    let back = wait_for(Duration::from_secs(1), || {
        has(&s[0], "192.0.2.2") && has(&s[1], "192.0.2.2")
    });
    println!(
        "fleet: undrain through c → back in a's and b's answers after {:?}",
        t0.elapsed()
    );
    assert!(back.is_some(), "undrain not applied within 1 s");
}

/// `https` etcd with client certificates (`ca`, `cert`, `key`) and etcd users
/// (`username`, `password`): the right ones connect; a wrong password stays out, and that site
/// still answers from its own view and says why in `/status`.
#[test]
fn tls_client_certificates_and_etcd_users() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let _one = one_fleet_at_a_time();
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = tmp.path().join("pki");
    std::fs::create_dir_all(&pki).expect("mkdir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fleet test CA");
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, cn: &str, file: &str| {
        let mut p = CertificateParams::new(names).expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &issuer).expect("sign");
        std::fs::write(pki.join(format!("{file}.pem")), cert.pem()).expect("write cert");
        std::fs::write(pki.join(format!("{file}.key")), key.serialize_pem()).expect("write key");
    };
    std::fs::write(pki.join("ca.pem"), ca_cert.pem()).expect("write ca");
    leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        "etcd",
        "server",
    );
    // Not an etcd user: with auth on, the certificate alone grants nothing.
    leaf(vec!["meridian".into()], "meridian-client", "client");

    let client = free_port();
    let peer = free_port();
    let url = format!("https://127.0.0.1:{client}");
    let p = |f: &str| pki.join(f).display().to_string();
    let _etcd = ServerProcess::try_spawn(
        Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(tmp.path().join("etcd"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
            .args(["--initial-cluster", &format!("t=http://127.0.0.1:{peer}")])
            .args([
                "--cert-file",
                &p("server.pem"),
                "--key-file",
                &p("server.key"),
            ])
            .args(["--trusted-ca-file", &p("ca.pem"), "--client-cert-auth"])
            .args(["--log-level", "error"]),
    )
    .expect("etcd (Debian etcd-server) must be installed: .ci/run installs it");
    let etcdctl = |args: &[&str]| {
        Command::new("etcdctl")
            .args(["--endpoints", &url, "--cacert", &p("ca.pem")])
            .args(["--cert", &p("client.pem"), "--key", &p("client.key")])
            .args(["--command-timeout", "3s"])
            .args(args)
            .output()
            .map(|o| {
                (
                    o.status.success(),
                    String::from_utf8_lossy(&o.stderr).into_owned(),
                )
            })
            .unwrap_or((false, "etcdctl did not run".into()))
    };
    assert!(
        wait_for(Duration::from_secs(20), || etcdctl(&["endpoint", "health"])
            .0)
        .is_some(),
        "TLS etcd did not come up"
    );
    let _ = etcdctl(&["role", "add", "root"]);
    for cmd in [
        &["user", "add", "root:r00t-pw"][..],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
    ] {
        let (ok, err) = etcdctl(cmd);
        assert!(ok, "etcdctl {cmd:?}: {err}");
    }

    let h = HealthStub::start();
    let eps = [("192.0.2.1", "/ok")];
    let mut s = sites(tmp.path());
    let table = |password: &str| {
        format!(
            "[fleet]\netcd = [\"{url}\"]\nprefix = \"/meridian/tls\"\nreport_ttl = \"2s\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nusername = \"root\"\npassword = \"{password}\"\n",
            p("ca.pem"),
            p("client.pem"),
            p("client.key")
        )
    };
    let good = config(&s[0], &h, &eps, &table("r00t-pw"));
    let bad = config(&s[1], &h, &eps, &table("wrong"));
    s[0].start(&good);
    s[1].start(&bad);
    assert!(
        wait_for(Duration::from_secs(10), || s[0].connected()).is_some(),
        "TLS + password site did not connect: {}\n{}",
        s[0].status()["fleet"],
        s[0].log()
    );
    assert!(
        wait_for(Duration::from_secs(10), || s[1].status()["fleet"]
            ["last_error"]
            .is_string())
        .is_some(),
        "the wrong password's failure never showed in /status"
    );
    let st = s[1].status();
    assert_eq!(st["fleet"]["connected"], false, "{}", st["fleet"]);
    assert!(st["fleet"]["last_error"].is_string(), "{}", st["fleet"]);
    assert!(
        has(&s[1], "192.0.2.1"),
        "a site that cannot join still answers"
    );
    let log = s[1].log();
    assert!(
        !log.contains("wrong"),
        "the password reached the log:\n{log}"
    );
}

/// `meridian check` on `config` written as `site`'s.
fn check(site: &Site, config: &str) -> Output {
    std::fs::write(site.dir.join("meridian.toml"), config).expect("write");
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check", "--config"])
        .arg(site.dir.join("meridian.toml"))
        .output()
        .expect("run check")
}

/// `meridian check` validates `[fleet]` and `source` without etcd.
#[test]
fn check_validates_the_fleet_table() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let h = HealthStub::start();
    let site = Site::new(tmp.path(), "a", "127.0.0.11");
    let run = |fleet: &str, site_id: &str| {
        let c = config(&site, &h, &[("192.0.2.1", "/ok")], fleet)
            .replace("id = \"a\"", &format!("id = \"{site_id}\""));
        let out = check(&site, &c);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let base = "[fleet]\netcd = [\"http://127.0.0.1:2379\"]\nprefix = \"/meridian/prod\"\n";
    for q in ["any", "majority", "all", "0.3"] {
        let (ok, text) = run(
            &format!("{base}quorum = \"{q}\"\nprobers = 2\nreport_ttl = \"5s\"\n"),
            "a",
        );
        assert!(ok, "quorum {q}: {text}");
    }
    for (fleet, site_id, want) in [
        (format!("{base}quorum = \"most\"\n"), "a", "fleet.quorum"),
        (format!("{base}quorum = \"1.5\"\n"), "a", "fleet.quorum"),
        (base.to_string(), "", "[site] id"),
        (
            "[fleet]\netcd = [\"etcd:2379\"]\n".to_string(),
            "a",
            "fleet.etcd",
        ),
        (
            format!("{base}report_ttl = \"soon\"\n"),
            "a",
            "fleet.report_ttl",
        ),
        (
            format!("{base}username = \"u\"\n"),
            "a",
            "username and password",
        ),
        (format!("{base}colour = \"blue\"\n"), "a", "colour"),
    ] {
        let (ok, text) = run(&fleet, site_id);
        assert!(
            !ok && text.contains(want),
            "{fleet}: want `{want}` in:\n{text}"
        );
    }
    let (ok, text) = run("", "a");
    assert!(ok, "{text}");
    let c = config(&site, &h, &[("192.0.2.1", "/ok")], "").replace("127.0.0.11", "nowhere");
    let out = check(&site, &c);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("source"));
}

// ---------------------------------------------------------------------------------------------
// Trust boundaries (SPEC "Trust boundaries", Fleet): what another writer of etcd can change.

/// A report of `site` with `verdict` for every one of `addrs`.
fn report(site: &str, addrs: &[&str], verdict: bool) -> Vec<u8> {
    let verdicts: serde_json::Map<String, Value> = addrs
        .iter()
        .map(|a| (format!("www.example.com/{a}"), Value::Bool(verdict)))
        .collect();
    serde_json::to_vec(&serde_json::json!({"site": site, "verdicts": verdicts})).expect("json")
}

/// `meridian_fleet_reports_ignored_total` of `reason` at `site` (0 when absent).
fn ignored(site: &Site, reason: &str) -> f64 {
    site.metric(&format!(
        "meridian_fleet_reports_ignored_total{{reason=\"{reason}\"}}"
    ))
    .unwrap_or(0.0)
}

/// Reports that are not a live site's own do not count: one put without a lease, one under a
/// key that is not its site's, one that is not a report, and a forged unleased copy of a real
/// site's key. Each would take .1 out under `quorum = "all"` if it counted; a leased report
/// of its own site does (the control). Invalid drain records are neither applied nor kept.
#[test]
fn reports_count_only_under_their_own_leased_key() {
    let _one = one_fleet_at_a_time();
    let tmp = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(&tmp.path().join("etcd"));
    let h = HealthStub::start();
    let eps = [("192.0.2.1", "/ok"), ("192.0.2.2", "/ok")];
    let mut s = sites(tmp.path());
    let prefix = "/meridian/trust";
    start_all(&mut s, &h, &eps, &fleet_table(&etcd, prefix, "all", 0));
    assert!(
        wait_for(Duration::from_secs(10), || all_connected(&s)
            && s.iter().all(|x| has(x, "192.0.2.1") && has(x, "192.0.2.2")))
        .is_some(),
        "fleet did not come up with both endpoints"
    );
    let down = report("ghost", &["192.0.2.1"], false);
    let lease = etcd.lease(120);
    etcd.put(&format!("{prefix}/sites/ghost"), &down, None);
    etcd.put(
        &format!("{prefix}/sites/liar"),
        &report("a", &["192.0.2.1"], false),
        Some(&lease),
    );
    etcd.put(
        &format!("{prefix}/sites/junk"),
        b"{\"site\": \"junk\", \"verdicts\": 5}",
        Some(&lease),
    );
    // b's own key overwritten without a lease: b puts its own report back.
    etcd.put(
        &format!("{prefix}/sites/b"),
        &report("b", &["192.0.2.1"], false),
        None,
    );
    // Then a harmless leased report: once every site lists it, every site has read the
    // forged ones before it (a watch delivers in order).
    let marker = etcd.lease(120);
    etcd.put(
        &format!("{prefix}/sites/marker"),
        &report("marker", &[], true),
        Some(&marker),
    );
    assert!(
        wait_for(Duration::from_secs(5), || s
            .iter()
            .all(|x| x.status()["fleet"]["live_sites"]
                .to_string()
                .contains("marker")))
        .is_some(),
        "the marker report did not reach every site"
    );
    for site in &s {
        assert!(
            has(site, "192.0.2.1"),
            "{}: a forged report took .1 out",
            site.id
        );
    }
    etcd.ctl_ok(None, &["lease", "revoke", &marker], None);
    let want: Vec<String> = ["a", "b", "c"].iter().map(|x| x.to_string()).collect();
    let seen = wait_for(Duration::from_secs(5), || {
        s.iter().all(|x| {
            let st = x.status();
            let ig = st["fleet"]["ignored"].to_string();
            ["ghost", "liar", "junk"]
                .iter()
                .all(|k| ig.contains(&format!("{prefix}/sites/{k}")))
                && x.fleet_sites() == want
        })
    });
    assert!(
        seen.is_some(),
        "every site should list the three forged keys as ignored and count a, b, c: {}",
        s[0].status()["fleet"]
    );
    for site in &s {
        let f = &site.endpoint("192.0.2.1")["fleet"];
        assert_eq!(f["reporting_sites"], 3, "{}: {f}", site.id);
        assert_eq!(f["healthy_sites"], 3, "{}: {f}", site.id);
        assert!(
            has(site, "192.0.2.1"),
            "{}: a forged report took .1 out",
            site.id
        );
        for reason in ["no_lease", "site_mismatch", "malformed"] {
            assert!(
                ignored(site, reason) >= 1.0,
                "{}: no {reason} counted",
                site.id
            );
        }
    }
    let f = s[0].status()["fleet"].clone();
    assert!(
        f["ignored"].to_string().contains("\"reason\":\"no_lease\""),
        "{f}"
    );
    assert_eq!(f["ignored_keys"], 3, "{f}");

    // The control: a leased report of its own site counts, and leaves with its lease.
    let d = etcd.lease(120);
    etcd.put(
        &format!("{prefix}/sites/d"),
        &report("d", &["192.0.2.1"], false),
        Some(&d),
    );
    assert!(
        wait_for(Duration::from_secs(3), || s
            .iter()
            .all(|x| lacks(x, "192.0.2.1")))
        .is_some(),
        "a leased report of site d should count under quorum all"
    );
    assert!(s[2].fleet_sites().contains(&"d".to_string()));
    etcd.ctl_ok(None, &["lease", "revoke", &d], None);
    assert!(
        wait_for(Duration::from_secs(3), || s
            .iter()
            .all(|x| has(x, "192.0.2.1")))
        .is_some(),
        "d's revoked report should stop counting"
    );

    // Drain records: one draining .2 with a time that is none, one draining .2 among more
    // rules than allowed (10,000). Neither is applied nor written to disk.
    let rule = |scope: &str| format!(r#"{{"drain": true, {scope}, "at": "2026-01-01T00:00:00Z"}}"#);
    let bad_time = r#"{"version": 1, "drains": [{"drain": true, "service": "www.example.com", "endpoint": "192.0.2.2", "at": "never"}]}"#;
    let mut many: Vec<String> = (0..10_500)
        .map(|i| rule(&format!(r#""region": "r{i}""#)))
        .collect();
    many.push(rule(
        r#""service": "www.example.com", "endpoint": "192.0.2.2""#,
    ));
    let too_many = format!(r#"{{"version": 1, "drains": [{}]}}"#, many.join(","));
    assert!(
        too_many.len() < 1_400_000,
        "within etcd's 1.5 MiB request limit"
    );
    let before: Vec<f64> = s.iter().map(|x| ignored(x, "drains_invalid")).collect();
    etcd.put(&format!("{prefix}/drains"), bad_time.as_bytes(), None);
    etcd.put(&format!("{prefix}/drains"), too_many.as_bytes(), None);
    let marker = etcd.lease(120);
    etcd.put(
        &format!("{prefix}/sites/marker2"),
        &report("marker2", &[], true),
        Some(&marker),
    );
    assert!(
        wait_for(Duration::from_secs(5), || s
            .iter()
            .all(|x| x.status()["fleet"]["live_sites"]
                .to_string()
                .contains("marker2")))
        .is_some(),
        "the marker report did not reach every site"
    );
    for site in &s {
        assert!(
            has(site, "192.0.2.2"),
            "{}: an invalid drain record was applied",
            site.id
        );
    }
    assert!(
        wait_for(Duration::from_secs(5), || s
            .iter()
            .zip(&before)
            .all(|(x, b)| ignored(x, "drains_invalid") >= b + 2.0))
        .is_some(),
        "the invalid drain records were not seen and counted everywhere"
    );
    for site in &s {
        assert!(
            has(site, "192.0.2.2"),
            "{}: an invalid drain record was applied",
            site.id
        );
        assert_eq!(site.endpoint("192.0.2.2")["drained"], false, "{}", site.id);
        assert_eq!(
            site.status()["drains"],
            serde_json::json!([]),
            "{}",
            site.id
        );
        let kept = std::fs::read_to_string(site.dir.join("state/drains.json")).unwrap_or_default();
        assert!(
            !kept.contains("192.0.2.2") && !kept.contains("r10"),
            "{}: persisted: {kept}",
            site.id
        );
        assert!(
            site.log().contains("drain record in etcd ignored"),
            "{}: not logged",
            site.id
        );
    }
    // A drain through the API replaces the invalid record and reaches everyone.
    let (code, body) = s[0].drain("/api/v1/drain", "192.0.2.2");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"fleet\":true"), "{body}");
    assert!(
        wait_for(Duration::from_secs(2), || s
            .iter()
            .all(|x| lacks(x, "192.0.2.2")))
        .is_some(),
        "a drain over an invalid record did not reach every site"
    );
}

/// A rendezvous weight as the fleet computes it (src/fleet/member.rs `rank`), to choose a site
/// id as an attacker would.
fn rank(key: &str, site: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher24::new_with_keys(0x6d65_7269_6469_616e, 0x0066_6c65_6574);
    h.write(key.as_bytes());
    h.write_u8(0xff);
    h.write(site.as_bytes());
    h.finish()
}

/// `probers = 1`: a site whose id was chosen to rank first for every endpoint, reporting every
/// endpoint down. Only an endpoint's assigned probers vote on it, and no site is assigned more
/// than its capped share, so the real sites keep probing (and answering) the rest.
#[test]
fn only_assigned_probers_vote_and_no_site_id_takes_every_endpoint() {
    let _one = one_fleet_at_a_time();
    let tmp = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(&tmp.path().join("etcd"));
    let h = HealthStub::start();
    let eps: Vec<(String, String)> = (1..=6)
        .map(|i| (format!("192.0.2.{i}"), format!("/p{i}")))
        .collect();
    let eps_ref: Vec<(&str, &str)> = eps.iter().map(|(a, p)| (a.as_str(), p.as_str())).collect();
    let addrs: Vec<&str> = eps.iter().map(|(a, _)| a.as_str()).collect();
    let paths: Vec<&str> = eps.iter().map(|(_, p)| p.as_str()).collect();
    let mut s = sites(tmp.path());
    let prefix = "/meridian/rank";
    start_all(&mut s, &h, &eps_ref, &fleet_table(&etcd, prefix, "all", 1));
    assert!(wait_for(Duration::from_secs(10), || all_connected(&s)).is_some());
    one_prober_each(&h, &paths, Duration::from_secs(15)).unwrap_or_else(|e| panic!("{e}"));

    let keys: Vec<String> = addrs
        .iter()
        .map(|a| format!("www.example.com/{a}"))
        .collect();
    let x = (0u64..)
        .map(|i| format!("x{i}"))
        .find(|x| {
            keys.iter().all(|k| {
                ["a", "b", "c"]
                    .iter()
                    .all(|site| rank(k, x) > rank(k, site))
            })
        })
        .expect("an id that ranks first everywhere");
    let lease = etcd.lease(120);
    etcd.put(
        &format!("{prefix}/sites/{x}"),
        &report(&x, &addrs, false),
        Some(&lease),
    );
    let prober_of = |site: &Site, addr: &str| site.endpoint(addr)["fleet"]["probers"].clone();
    let taken = |site: &Site| {
        addrs
            .iter()
            .filter(|a| prober_of(site, a) == serde_json::json!([x]))
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
    };
    assert!(
        wait_for(Duration::from_secs(5), || s
            .iter()
            .all(|site| !taken(site).is_empty()))
        .is_some(),
        "{x} should count as a site and probe something"
    );
    // ceil((1 + 0.25) × 6 endpoints × 1 prober / 4 sites) = 2.
    let xs = taken(&s[0]);
    assert_eq!(xs.len(), 2, "{x} probes {xs:?}, more than its share");
    for site in &s {
        assert_eq!(taken(site), xs, "{}: another assignment", site.id);
        assert!(site.fleet_sites().contains(&x), "{}", site.id);
    }
    // The others are probed by the real sites, and x's "down" does not count there.
    let rest: Vec<&str> = eps
        .iter()
        .filter(|(a, _)| !xs.contains(a))
        .map(|(_, p)| p.as_str())
        .collect();
    let (who, _) =
        one_prober_each(&h, &rest, Duration::from_secs(15)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(who.len(), 4);
    let kept = wait_for(Duration::from_secs(3), || {
        s.iter().all(|site| {
            addrs
                .iter()
                .filter(|a| !xs.contains(&a.to_string()))
                .all(|a| has(site, a))
        })
    });
    assert!(
        kept.is_some(),
        "a non-prober's report took endpoints out: {:?}",
        s[0].answers()
    );
    for site in &s {
        for a in addrs.iter().filter(|a| !xs.contains(&a.to_string())) {
            let f = &site.endpoint(a)["fleet"];
            assert_eq!(f["reporting_sites"], 1, "{}: {a}: {f}", site.id);
            assert_eq!(f["healthy_sites"], 1, "{}: {a}: {f}", site.id);
        }
    }
    // x gone: every endpoint back with a real prober and in the answers.
    etcd.ctl_ok(None, &["lease", "revoke", &lease], None);
    assert!(
        wait_for(FAILOVER + INTERVAL * 4, || s
            .iter()
            .all(|site| addrs.iter().all(|a| has(site, a))))
        .is_some(),
        "endpoints did not come back after {x} left"
    );
}

/// docs/fleet.md's etcd RBAC recipe, with etcd auth on: each site's user reads the fleet and
/// writes only its own key and the drains; the sites work under it (report, drain, revoke at
/// SIGTERM), and one site's user cannot write or delete another's key.
#[test]
fn rbac_recipe_lets_a_site_write_only_its_own_keys() {
    let _one = one_fleet_at_a_time();
    let tmp = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(&tmp.path().join("etcd"));
    let prefix = "/meridian/rbac";
    let root = Some("root:r00t-pw");
    // The recipe, as docs/fleet.md gives it.
    etcd.ctl_ok(None, &["user", "add", "root:r00t-pw"], None);
    etcd.ctl_ok(None, &["user", "grant-role", "root", "root"], None);
    for site in ["a", "b"] {
        let (user, role) = (format!("meridian-{site}"), format!("meridian-{site}"));
        etcd.ctl_ok(None, &["role", "add", &role], None);
        etcd.ctl_ok(
            None,
            &[
                "role",
                "grant-permission",
                &role,
                "--prefix=true",
                "read",
                &format!("{prefix}/"),
            ],
            None,
        );
        etcd.ctl_ok(
            None,
            &[
                "role",
                "grant-permission",
                &role,
                "readwrite",
                &format!("{prefix}/sites/{site}"),
            ],
            None,
        );
        etcd.ctl_ok(
            None,
            &[
                "role",
                "grant-permission",
                &role,
                "readwrite",
                &format!("{prefix}/drains"),
            ],
            None,
        );
        etcd.ctl_ok(None, &["user", "add", &format!("{user}:pw-{site}")], None);
        etcd.ctl_ok(None, &["user", "grant-role", &user, &role], None);
    }
    etcd.ctl_ok(None, &["auth", "enable"], None);

    let h = HealthStub::start();
    let eps = [("192.0.2.1", "/ok"), ("192.0.2.2", "/ok")];
    let mut s = sites(tmp.path());
    s.truncate(2);
    let ttl = Duration::from_secs(6);
    for site in s.iter_mut() {
        let fleet = format!(
            "{}username = \"meridian-{id}\"\npassword = \"pw-{id}\"\n",
            fleet_table_ttl(&etcd, prefix, "all", 0, ttl),
            id = site.id
        );
        let c = config(site, &h, &eps, &fleet);
        site.start(&c);
    }
    let want: Vec<String> = vec!["a".into(), "b".into()];
    assert!(
        wait_for(Duration::from_secs(10), || all_connected(&s)
            && s.iter().all(|x| x.fleet_sites() == want))
        .is_some(),
        "the sites did not join under the RBAC recipe: {}\n{}",
        s[0].status()["fleet"],
        s[0].log()
    );
    // Drains are writable by every site.
    let (code, body) = s[0].drain("/api/v1/drain", "192.0.2.2");
    assert!(
        code == 200 && body.contains("\"fleet\":true"),
        "{code} {body}"
    );
    assert!(
        wait_for(Duration::from_secs(1), || lacks(&s[1], "192.0.2.2")).is_some(),
        "a's drain did not reach b"
    );
    // a's user: not b's key, not a key that only starts like a's, nothing else under the prefix.
    let as_a = Some("meridian-a:pw-a");
    let forged = report("b", &["192.0.2.1"], false);
    for (args, value) in [
        (
            vec!["put".to_string(), format!("{prefix}/sites/b")],
            Some(&forged[..]),
        ),
        (vec!["del".to_string(), format!("{prefix}/sites/b")], None),
        (
            vec!["put".to_string(), format!("{prefix}/sites/ab")],
            Some(&forged[..]),
        ),
        (
            vec!["put".to_string(), format!("{prefix}/other")],
            Some(&b"x"[..]),
        ),
    ] {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = etcd.ctl(as_a, &argv, value);
        assert!(
            !ok && err.contains("permission denied"),
            "meridian-a could {args:?}: {err}"
        );
    }
    // ... while its own key is its to write (so the denials above are about the key).
    let (ok, _, err) = etcd.ctl(
        as_a,
        &["put", &format!("{prefix}/sites/a")],
        Some(&report("a", &[], true)),
    );
    assert!(ok, "meridian-a cannot write its own key: {err}");
    let (_, out, _) = etcd.ctl(
        root,
        &["get", &format!("{prefix}/sites/b"), "--print-value-only"],
        None,
    );
    assert!(
        out.contains("\"site\":\"b\""),
        "b's report was changed: {out}"
    );
    // a notices and puts its leased report back; b counts a again.
    let key_a = format!("{prefix}/sites/a");
    let leased = || {
        let (_, out, _) = etcd.ctl(root, &["get", &key_a, "-w", "json"], None);
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        v["kvs"][0]["lease"].as_i64().is_some_and(|l| l != 0)
    };
    assert!(
        wait_for(Duration::from_secs(3), leased).is_some(),
        "a did not put its leased report back over the unleased one"
    );
    assert!(
        wait_for(Duration::from_secs(3), || s[1].fleet_sites() == want).is_some(),
        "a's report was not restored: {}",
        s[1].status()["fleet"]
    );
    // SIGTERM: a revokes its lease under the recipe, so b drops it long before report_ttl.
    let t0 = Instant::now();
    s[0].stop();
    let gone = wait_for(Duration::from_secs(2), || {
        s[1].fleet_sites() == vec!["b".to_string()]
    });
    println!(
        "fleet: rbac: SIGTERM'd site dropped by the other after {:?} (report_ttl {ttl:?})",
        t0.elapsed()
    );
    assert!(
        gone.is_some(),
        "a's lease was not revoked at SIGTERM under RBAC"
    );
}

// ---------------------------------------------------------------------------------------------
// Quorums, membership and reloads, live (issue 24 item 10, SPEC "Fleet", "Reload").

/// `any` and a share quorum on a live fleet, each set by a reload of `[fleet]` (which restarts
/// the member with the new settings), then `all`, then `[fleet]` removed from one site.
#[test]
fn quorum_any_and_share_live_and_reload_applies_a_changed_fleet_table() {
    let _one = one_fleet_at_a_time();
    let tmp = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(&tmp.path().join("etcd"));
    let h = HealthStub::start();
    // .1 fails as a sees it, .2 as a and b see it, .3 is fine for all.
    h.set_failing("/one", Some("127.0.0.11"), true);
    h.set_failing("/two", Some("127.0.0.11"), true);
    h.set_failing("/two", Some("127.0.0.12"), true);
    let eps = [
        ("192.0.2.1", "/one"),
        ("192.0.2.2", "/two"),
        ("192.0.2.3", "/ok"),
    ];
    let mut s = sites(tmp.path());
    let prefix = "/meridian/quorums";
    start_all(&mut s, &h, &eps, &fleet_table(&etcd, prefix, "any", 0));
    let counts = |site: &Site, addr: &str| {
        let f = &site.endpoint(addr)["fleet"];
        (f["healthy_sites"].as_u64(), f["reporting_sites"].as_u64())
    };
    let settled = wait_for(Duration::from_secs(10), || {
        all_connected(&s)
            && s.iter().all(|x| {
                counts(x, "192.0.2.1") == (Some(2), Some(3))
                    && counts(x, "192.0.2.2") == (Some(1), Some(3))
            })
    });
    assert!(
        settled.is_some(),
        "own verdicts did not settle: {}",
        s[0].endpoint("192.0.2.2")
    );
    // any: one healthy site of three keeps .2 in everyone's answers.
    for site in &s {
        let a = site
            .answers()
            .unwrap_or_else(|| panic!("{}: no answer", site.id));
        for n in 1..=3 {
            assert!(
                a.contains(&format!("192.0.2.{n}")),
                "any: {}: {a:?}",
                site.id
            );
        }
    }

    // a and b reload through the admin API, c by SIGHUP: both end in the same reload.
    let reload_all = |s: &[Site], quorum: &str| {
        for site in s {
            let c = config(site, &h, &eps, &fleet_table(&etcd, prefix, quorum, 0));
            if site.id == "c" {
                std::fs::write(site.dir.join("meridian.toml"), c).expect("write config");
                site.process.as_ref().expect("c runs").signal(libc::SIGHUP);
            } else {
                site.reload(&c);
            }
        }
        let applied = wait_for(Duration::from_secs(5), || {
            s.iter().all(|x| {
                let f = x.status()["fleet"].clone();
                f["quorum"] == quorum && f["connected"] == true
            })
        });
        assert!(
            applied.is_some(),
            "reload to quorum {quorum} not applied: {}",
            s[0].status()["fleet"]
        );
    };
    // "0.5": 2 of 3 is enough for .1, 1 of 3 is not for .2.
    reload_all(&s, "0.5");
    let share = wait_for(Duration::from_secs(3), || {
        s.iter()
            .all(|x| lacks(x, "192.0.2.2") && has(x, "192.0.2.1") && has(x, "192.0.2.3"))
    });
    assert!(
        share.is_some(),
        "quorum 0.5: .2 out, .1 and .3 in: {:?}",
        s[2].answers()
    );
    // all: a's view alone takes .1 out everywhere.
    reload_all(&s, "all");
    let all = wait_for(Duration::from_secs(3), || {
        s.iter()
            .all(|x| lacks(x, "192.0.2.1") && lacks(x, "192.0.2.2") && has(x, "192.0.2.3"))
    });
    assert!(
        all.is_some(),
        "quorum all after reload: {:?}",
        s[2].answers()
    );

    // [fleet] removed from a by a reload: a leaves at once (its lease revoked) and answers from
    // its own view; b and c count without it, so .1 (failing only from a) is back there.
    let t0 = Instant::now();
    s[0].reload(&config(&s[0], &h, &eps, ""));
    let left = wait_for(Duration::from_secs(2), || {
        s[0].status()["fleet"].is_null()
            && s[1].fleet_sites() == ["b", "c"]
            && has(&s[1], "192.0.2.1")
            && has(&s[2], "192.0.2.1")
            && lacks(&s[0], "192.0.2.1")
    });
    println!(
        "fleet: [fleet] removed by a reload: left after {:?}",
        t0.elapsed()
    );
    assert!(
        left.is_some(),
        "a reload without [fleet] should leave the fleet: a {} / b {}",
        s[0].status()["fleet"],
        s[1].status()["fleet"]
    );
}

/// A SIGKILLed site leaves the others' quorum once its lease runs out (`report_ttl`), not
/// before; a SIGTERMed one revokes its lease and leaves at once.
#[test]
fn a_dead_site_leaves_the_quorum_after_report_ttl_a_stopped_one_at_once() {
    let _one = one_fleet_at_a_time();
    let tmp = tempfile::tempdir().expect("tempdir");
    let etcd = Etcd::start(&tmp.path().join("etcd"));
    let h = HealthStub::start();
    // .1 fails only as b sees it: under `all`, b's report alone keeps it out.
    h.set_failing("/only-b", Some("127.0.0.12"), true);
    let eps = [("192.0.2.1", "/only-b"), ("192.0.2.2", "/ok")];
    let ttl = Duration::from_secs(4);
    let fleet = fleet_table_ttl(&etcd, "/meridian/members", "all", 0, ttl);
    let mut s = sites(tmp.path());
    start_all(&mut s, &h, &eps, &fleet);
    let b_counts = |s: &[Site]| {
        wait_for(Duration::from_secs(10), || {
            all_connected(s)
                && [&s[0], &s[2]]
                    .iter()
                    .all(|x| x.fleet_sites() == ["a", "b", "c"] && lacks(x, "192.0.2.1"))
        })
    };
    assert!(
        b_counts(&s).is_some(),
        "b's verdict should keep .1 out at a and c"
    );

    s[1].sigkill();
    let t0 = Instant::now();
    let mut still_counted_at = Duration::ZERO;
    let left = wait_for(ttl + Duration::from_secs(2), || {
        let gone = [&s[0], &s[2]]
            .iter()
            .all(|x| x.fleet_sites() == ["a", "c"] && has(x, "192.0.2.1"));
        if !gone {
            still_counted_at = t0.elapsed();
        }
        gone
    });
    println!("fleet: SIGKILLed site left the quorum after {left:?} (report_ttl {ttl:?}; last seen counted at {still_counted_at:?})");
    assert!(
        left.is_some(),
        "a dead site should leave the quorum within report_ttl + 2 s"
    );
    // Its last keep-alive was at most a third of report_ttl before the kill.
    assert!(
        still_counted_at >= ttl / 2,
        "the dead site left after {still_counted_at:?}, before its lease could run out"
    );

    let c = config(&s[1], &h, &eps, &fleet);
    s[1].start(&c);
    assert!(b_counts(&s).is_some(), "b did not rejoin");
    s[1].stop();
    let t0 = Instant::now();
    let left = wait_for(Duration::from_secs(1), || {
        [&s[0], &s[2]]
            .iter()
            .all(|x| x.fleet_sites() == ["a", "c"] && has(x, "192.0.2.1"))
    });
    println!(
        "fleet: SIGTERMed site left the quorum after {:?}",
        t0.elapsed()
    );
    assert!(
        left.is_some(),
        "a SIGTERMed site should revoke its lease and leave at once"
    );
}
