#![cfg(feature = "fleet")]
//! `[fleet]` end to end (SPEC "Fleet", "Drains survive restarts", `[health.NAME] source`):
//! a real etcd (Debian `etcd-server`) on loopback ports with its data in a temp dir, three real
//! `meridian serve` processes (sites a, b, c, probing from 127.0.0.11/12/13), and one HTTP
//! health server in this test that answers by path and by the peer address of the probe, so
//! "failing only from a's view" is real. Answers are read with real DNS queries over UDP.
//!
//! Measured and printed (`cargo test --test fleet -- --nocapture`): verdict change → every
//! site, drain → every site, prober takeover, rejoin after etcd returns, and the probe
//! requests per second the health server saw with and without `probers`.
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

use common::{free_port, serve_command, HealthStub, ServerProcess, EXAMPLE_ZONE};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
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

/// The turn of a test that runs a fleet (see the top of the file).
fn one_fleet_at_a_time() -> MutexGuard<'static, ()> {
    static ONE_FLEET_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_FLEET_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond().then(|| t0.elapsed())
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
    format!(
        "[fleet]\netcd = [\"{}\"]\nprefix = \"{prefix}\"\nquorum = \"{quorum}\"\nprobers = {probers}\nreport_ttl = \"{}s\"\n",
        etcd.url(),
        REPORT_TTL.as_secs()
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

    fn metric_connected(&self) -> Option<String> {
        let (_, body) = http(self.admin, "GET", "/metrics", None);
        body.lines()
            .find(|l| l.starts_with("meridian_fleet_connected"))
            .map(str::to_string)
    }

    /// The A records of www.example.com this site answers, over UDP.
    fn answers(&self) -> BTreeSet<String> {
        let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            Name::from_ascii("www.example.com.").expect("name"),
            RecordType::A,
        ));
        let Ok(bytes) = m.to_vec() else {
            return BTreeSet::new();
        };
        let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
            return BTreeSet::new();
        };
        let _ = sock.set_read_timeout(Some(Duration::from_millis(500)));
        if sock.send_to(&bytes, self.dns).is_err() {
            return BTreeSet::new();
        }
        let mut buf = [0u8; 4096];
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            return BTreeSet::from(["<no answer>".to_string()]);
        };
        let Ok(r) = Message::from_vec(&buf[..n]) else {
            return BTreeSet::from(["<bad answer>".to_string()]);
        };
        r.answers
            .iter()
            .filter_map(|rr| match &rr.data {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect()
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

fn rand_id() -> u16 {
    (Instant::now().elapsed().subsec_nanos() as u16) ^ (std::process::id() as u16)
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

fn has(s: &Site, addr: &str) -> bool {
    s.answers().contains(addr)
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
    let settled = wait_until(Duration::from_secs(10), || {
        !has(&s[0], "192.0.2.1") && has(&s[1], "192.0.2.1") && has(&s[2], "192.0.2.1")
    });
    assert!(
        settled.is_some(),
        "no fleet: .1 should leave a's answers only"
    );
    // The sources are the configured ones: the health server saw each site's address.
    for (_, src) in SITES {
        let ip: IpAddr = src.parse().expect("ip");
        assert!(
            h.hits().keys().any(|(_, from)| *from == ip),
            "no probe came from {src}"
        );
    }
    let r0 = rates(&h, Duration::from_secs(3));
    let per_endpoint0: f64 = r0.values().sum::<f64>() / eps.len() as f64;

    // majority: a's failure alone does not take .1 out of anyone's answers.
    let prefix = "/meridian/quorum";
    start_all(&mut s, &h, &eps, &fleet_table(&etcd, prefix, "majority", 0));
    assert!(
        wait_until(Duration::from_secs(10), || all_connected(&s)).is_some(),
        "sites did not connect to etcd"
    );
    // Long enough for a to see .1 down on its own (rise/fall 2 at 1 s).
    let a_down = wait_until(Duration::from_secs(8), || {
        s[0].endpoint("192.0.2.1")["fleet"]["own_verdict"] == false
    });
    assert!(
        a_down.is_some(),
        "a never saw .1 down: {}",
        s[0].endpoint("192.0.2.1")
    );
    std::thread::sleep(Duration::from_millis(500));
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
    let all_gone = wait_until(FAILOVER + Duration::from_secs(1), || {
        for (i, site) in s.iter().enumerate() {
            if gone[i].is_none() && !has(site, "192.0.2.3") {
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
        wait_until(FAILOVER + Duration::from_secs(1), || s
            .iter()
            .all(|x| has(x, "192.0.2.3")))
        .is_some(),
        ".3 did not come back"
    );

    // etcd stopped: every site keeps answering, says it is disconnected, and uses its own
    // view (a drops .1, b and c keep it).
    etcd.stop();
    let t0 = Instant::now();
    let cut = wait_until(Duration::from_secs(8), || s.iter().all(|x| !x.connected()));
    println!("fleet: etcd stopped: all sites disconnected after {cut:?}");
    assert!(cut.is_some(), "sites did not notice etcd is gone");
    assert!(
        wait_until(Duration::from_secs(5), || !has(&s[0], "192.0.2.1")
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
    assert!(!has(&s[0], "192.0.2.2") && has(&s[1], "192.0.2.2"));

    // etcd back: the sites rejoin by themselves and converge within report_ttl.
    etcd.spawn();
    let t0 = Instant::now();
    let joined = wait_until(Duration::from_secs(10), || all_connected(&s));
    assert!(joined.is_some(), "sites did not rejoin");
    // Converged within report_ttl of etcd answering again (SPEC), rejoin included.
    // Converged means both directions: the others' health reached a, and a's
    // partition-time drain reached the others (a writes it on rejoin, so it can trail
    // the health view by a round trip; CI once saw it 1 ms behind).
    let converged = wait_until(REPORT_TTL.saturating_sub(t0.elapsed()), || {
        s.iter()
            .all(|x| has(x, "192.0.2.1") && !has(x, "192.0.2.2"))
    });
    println!(
        "fleet: etcd back: rejoined after {joined:?}, converged after {:?}",
        t0.elapsed()
    );
    assert!(
        converged.is_some(),
        "sites did not converge after the rejoin"
    );
    for site in &s {
        assert!(
            !has(site, "192.0.2.2"),
            "{}: a's partition-time drain not applied",
            site.id
        );
    }
    let (code, body) = s[1].drain("/api/v1/undrain", "192.0.2.2");
    assert_eq!(code, 200, "{body}");
    assert!(
        wait_until(Duration::from_secs(1), || s
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
    let cut = wait_until(REPORT_TTL + Duration::from_secs(4), || {
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
        wait_until(Duration::from_secs(10), || all_connected(&s)).is_some(),
        "sites did not rejoin after etcd resumed"
    );

    // all: one site's failure is enough to take .1 out of every site's answers. Started
    // healthy, so that the moment a's own verdict flips can be told from the moment b and c
    // follow it: the difference is the trip through etcd.
    h.set_failing("/only-a", Some("127.0.0.11"), false);
    start_all(&mut s, &h, &eps, &fleet_table(&etcd, prefix, "all", 0));
    assert!(
        wait_until(Duration::from_secs(10), || all_connected(&s)
            && s.iter().all(|x| has(x, "192.0.2.1")))
        .is_some(),
        "all: .1 should start in every site's answers"
    );
    h.set_failing("/only-a", Some("127.0.0.11"), true);
    let t0 = Instant::now();
    let mut gone: [Option<Duration>; 3] = [None; 3];
    let out = wait_until(FAILOVER + Duration::from_secs(1), || {
        for (i, site) in s.iter().enumerate() {
            if gone[i].is_none() && !has(site, "192.0.2.1") {
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
    let etcd = Etcd::start(&tmp.path().join("etcd"));
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
    assert!(wait_until(Duration::from_secs(10), || all_connected(&s)).is_some());
    // Assignments settle once every site has seen the others.
    std::thread::sleep(INTERVAL * 3);
    let r = rates(&h, Duration::from_secs(4));
    let mut prober_of: HashMap<String, IpAddr> = HashMap::new();
    for (_, path) in &eps {
        let from: Vec<IpAddr> = r
            .iter()
            .filter(|((p, _), rate)| p == path && **rate > 0.0)
            .map(|((_, ip), _)| *ip)
            .collect();
        assert_eq!(
            from.len(),
            1,
            "{path} probed from {from:?}, not from exactly one site"
        );
        prober_of.insert(path.clone(), from[0]);
    }
    let per_endpoint1 = r.values().sum::<f64>() / eps.len() as f64;
    println!("fleet: probe requests/s per endpoint with probers = 1 (3 sites): {per_endpoint1:.2}");
    // /status says who probes what.
    let f = &s[1].endpoint("192.0.2.1")["fleet"];
    assert_eq!(f["probers"].as_array().map(Vec::len), Some(1), "{f}");
    for site in &s {
        assert!(!has(site, "192.0.2.6"), "{}: .6 is down for all", site.id);
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
    let took = wait_until(limit, || {
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
    std::thread::sleep(INTERVAL * 3);
    let r = rates(&h, Duration::from_secs(3));
    for (_, path) in &eps {
        let from: Vec<&IpAddr> = r
            .iter()
            .filter(|((p, _), rate)| p == path && **rate > 0.0)
            .map(|((_, ip), _)| ip)
            .collect();
        assert_eq!(
            from.len(),
            1,
            "{path} after the takeover: probed from {from:?}"
        );
        assert_ne!(*from[0], victim_ip);
    }
    for (i, site) in s.iter().enumerate() {
        if i == victim {
            continue;
        }
        let a = site.answers();
        for n in 1..=5 {
            assert!(a.contains(&format!("192.0.2.{n}")), "{}: {a:?}", site.id);
        }
        assert!(!a.contains("192.0.2.6"), "{}: .6 came back: {a:?}", site.id);
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
    assert!(wait_until(Duration::from_secs(10), || all_connected(&s)).is_some());
    assert!(wait_until(Duration::from_secs(5), || s
        .iter()
        .all(|x| has(x, "192.0.2.2")))
    .is_some());

    let (code, body) = s[1].drain("/api/v1/drain", "192.0.2.2");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"fleet\":true"), "{body}");
    let t0 = Instant::now();
    let applied = wait_until(Duration::from_secs(1), || {
        !has(&s[0], "192.0.2.2") && !has(&s[2], "192.0.2.2")
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
    assert!(wait_until(Duration::from_secs(10), || all_connected(&s)).is_some());
    for site in &s {
        assert_eq!(site.endpoint("192.0.2.2")["drained"], true, "{}", site.id);
        assert!(
            !has(site, "192.0.2.2"),
            "{} answers a drained endpoint",
            site.id
        );
        assert!(has(site, "192.0.2.1"), "{}", site.id);
    }

    // Undrain through c: back at a and b within 1 s.
    let (code, body) = s[2].drain("/api/v1/undrain", "192.0.2.2");
    assert_eq!(code, 200, "{body}");
    let t0 = Instant::now();
    let back = wait_until(Duration::from_secs(1), || {
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
        wait_until(Duration::from_secs(20), || etcdctl(&["endpoint", "health"])
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
        wait_until(Duration::from_secs(10), || s[0].connected()).is_some(),
        "TLS + password site did not connect: {}\n{}",
        s[0].status()["fleet"],
        s[0].log()
    );
    std::thread::sleep(Duration::from_secs(2));
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
