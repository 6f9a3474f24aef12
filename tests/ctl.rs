//! The control commands against a real server (SPEC "CLI", "Admin HTTP API", "Observability",
//! "Drains survive restarts"): `meridian serve` runs as a process on loopback with health
//! servers in this test; `meridian status`, `drain`, `undrain`, `reload` and `explain --live`
//! run as processes against it. Also: `GET /api/v1/explain`, drains kept across restarts, a
//! corrupt state file, and new endpoints probed at once.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{free_port, wait_until, write_config_dir, HealthStub, ServerProcess, EXAMPLE_ZONE};
use serde_json::Value;

const TOKEN: &str = "ctl-t0ken";

fn meridian() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_meridian"));
    c.env("RUST_BACKTRACE", "1").env_remove("MERIDIAN_TOKEN");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_no_panic(out: &Output) {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains("panicked"), "panic:\n{all}");
    assert!(!all.to_lowercase().contains("backtrace"), "{all}");
}

/// Runs a control command against the config in `dir`; asserts it did not panic.
fn ctl(dir: &Path, args: &[&str]) -> Output {
    let out = meridian()
        .args(args)
        .arg("--config")
        .arg(dir.join("meridian.toml"))
        .output()
        .expect("run meridian");
    assert_no_panic(&out);
    out
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// A health server: `/fail` answers 503, every other path 200.
fn health() -> HealthStub {
    let h = HealthStub::start();
    h.set_failing("/fail", None, true);
    h
}

// ---------------------------------------------------------------------------------------------
// The server process

struct Server {
    process: ServerProcess,
    dir: PathBuf,
    admin: SocketAddr,
}

impl Server {
    /// Writes `config` (with `{ADMIN}` replaced by a free port) and the shipped zone into
    /// `dir`, starts `meridian serve` and waits until its admin API answers.
    fn start(dir: &Path, config: &str) -> Server {
        let port = free_port();
        write_config_dir(
            dir,
            &[("example.com.zone", EXAMPLE_ZONE)],
            &config.replace("{ADMIN}", &port.to_string()),
        );
        Self::spawn(dir, port)
    }

    /// Starts `meridian serve` on the config already in `dir`.
    fn spawn(dir: &Path, port: u16) -> Server {
        let mut process = ServerProcess::spawn(
            meridian()
                .args(["serve", "--config"])
                .arg(dir.join("meridian.toml")),
        );
        let admin = ([127, 0, 0, 1], port).into();
        process.wait_http(admin, "/status", Duration::from_secs(20));
        Server {
            process,
            dir: dir.to_path_buf(),
            admin,
        }
    }

    fn port(&self) -> u16 {
        self.admin.port()
    }

    /// SIGTERM, wait, and return what it logged.
    fn stop(&mut self) -> String {
        self.process.stop(Duration::from_secs(10));
        self.process.stderr()
    }

    fn status(&self) -> Value {
        let out = ctl(&self.dir, &["status", "--json"]);
        assert_eq!(code(&out), Some(0), "{}", show(&out));
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// `drained` of endpoint `addr`, from `/status`.
    fn drained(&self, addr: &str) -> bool {
        let st = self.status();
        endpoint(&st, addr)["drained"]
            .as_bool()
            .unwrap_or_else(|| panic!("no endpoint {addr} in {st}"))
    }
}

fn endpoint<'a>(status: &'a Value, addr: &str) -> &'a Value {
    status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .find(|e| e["address"] == addr)
        .unwrap_or(&Value::Null)
}

/// One HTTP/1.1 request with `Connection: close`: status and body (0 when nothing answered).
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    common::http_exchange(addr, &req).map_or((0, String::new()), |(code, _, body)| (code, body))
}

fn answer(v: &Value) -> BTreeSet<String> {
    v["answer"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const HEAD: &str = r#"[server]
listen = ["127.0.0.1:0"]
zones = "zones"
udp_sockets = 1

[site]
id = "ctl-test"

[admin]
listen = "127.0.0.1:{ADMIN}"
token = "ctl-t0ken"

[regions.us-east]
location = { lat = 38.9, lon = -77.0 }
[regions.eu-west]
location = { lat = 53.35, lon = -6.26 }
"#;

/// The service of the command tests: every endpoint that is up, probed at `health`.
fn probed_config(h: &HealthStub) -> String {
    format!(
        r#"{HEAD}
[health.web]
kind = "http"
interval = "1s"
timeout = "500ms"
rise = 1
fall = 1

[[service]]
name = "www.example.com"
policy = "round-robin"
max_answers = 8
health = "web"
endpoints = [
  {{ region = "us-east", address = "192.0.2.10", check = "{ok}" }},
  {{ region = "us-east", address = "192.0.2.11", check = "{fail}" }},
  {{ region = "eu-west", address = "192.0.2.20", check = "{ok}" }},
]
"#,
        ok = h.url("/ok"),
        fail = h.url("/fail")
    )
}

fn live(dir: &Path) -> Value {
    let out = ctl(
        dir,
        &[
            "explain",
            "www.example.com",
            "--live",
            "--json",
            "--type",
            "A",
        ],
    );
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    serde_json::from_slice(&out.stdout).expect("explain --live --json is JSON")
}

#[test]
fn status_drain_undrain_reload_and_explain_live_against_a_running_server() {
    let h = health();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let s = Server::start(dir, &probed_config(&h));
    // 192.0.2.11's health URL fails: down after its first probe (fall = 1).
    assert!(
        wait_until(Duration::from_secs(10), || endpoint(
            &s.status(),
            "192.0.2.11"
        )["healthy"]
            == false),
        "192.0.2.11 never went down"
    );

    // status: the tables.
    let out = ctl(dir, &["status"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    let t = text(&out.stdout);
    eprintln!("{t}");
    assert!(
        t.lines()
            .any(|l| l.starts_with("site") && l.ends_with("ctl-test")),
        "{t}"
    );
    let row = |addr: &str| {
        t.lines()
            .find(|l| l.starts_with("www.example.com") && l.contains(&format!(" {addr} ")))
            .unwrap_or_else(|| panic!("no row for {addr}:\n{t}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("192.0.2.10")[2..4], ["us-east", "UP"], "{t}");
    assert_eq!(row("192.0.2.11")[2..4], ["us-east", "DOWN"], "{t}");
    assert!(row("192.0.2.11").iter().any(|c| c == "status"), "{t}");
    for header in [
        "SERVICE",
        "ENDPOINT",
        "REGION",
        "STATE",
        "LAST PROBE",
        "RTT",
        "LOAD",
    ] {
        assert!(t.contains(header), "{header} missing:\n{t}");
    }
    assert!(
        t.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["eu-west", "1", "1", "0", "0"]),
        "region table:\n{t}"
    );

    // explain --live: the down endpoint is not answered.
    assert_eq!(answer(&live(dir)), set(&["192.0.2.10", "192.0.2.20"]));

    // drain with the wrong token: refused, exit 1, nothing drained.
    let out = ctl(
        dir,
        &[
            "drain",
            "--endpoint",
            "192.0.2.10",
            "--service",
            "www.example.com",
            "--token",
            "nope",
        ],
    );
    assert_eq!(code(&out), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("401"), "{}", show(&out));
    assert!(
        !text(&out.stderr).contains("nope"),
        "token echoed: {}",
        show(&out)
    );
    assert!(!s.drained("192.0.2.10"));

    // drain with the token from the config; explain --live and /api/v1/explain see it.
    let out = ctl(
        dir,
        &[
            "drain",
            "--endpoint",
            "192.0.2.10",
            "--service",
            "www.example.com",
        ],
    );
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("drained: 1 endpoint"),
        "{}",
        show(&out)
    );
    assert!(s.drained("192.0.2.10"));
    let v = live(dir);
    assert_eq!(answer(&v), set(&["192.0.2.20"]), "{v}");
    let (c, body) = http(
        s.admin,
        "GET",
        "/api/v1/explain?name=www.example.com&type=A&client=192.0.2.99&ecs=81.2.69.0%2F24",
    );
    assert_eq!(c, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer(&v), set(&["192.0.2.20"]), "{v}");
    let cand = |addr: &str| {
        v["candidates"]
            .as_array()
            .and_then(|c| c.iter().find(|x| x["address"] == addr))
            .cloned()
            .unwrap_or_else(|| panic!("no candidate {addr}: {v}"))
    };
    assert_eq!(cand("192.0.2.10")["drained"], true, "{v}");
    assert_eq!(cand("192.0.2.10")["result"], "skipped: drained", "{v}");
    assert_eq!(cand("192.0.2.11")["healthy"], false, "{v}");
    assert_eq!(cand("192.0.2.11")["result"], "skipped: down", "{v}");
    assert_eq!(v["client"]["source"], "ecs", "{v}");
    for bad in [
        "/api/v1/explain",
        "/api/v1/explain?name=www.example.com&client=nope",
        "/api/v1/explain?name=www.example.com&type=BOGUS",
        "/api/v1/explain?name=www.example.com&ecs=81.2.69.0%2F99",
        "/api/v1/explain?name=www.example.com&qtype=A",
    ] {
        let (c, body) = http(s.admin, "GET", bad);
        assert_eq!(c, 400, "{bad}: {body}");
        let e: Value = serde_json::from_str(&body).expect("error is JSON");
        assert!(
            e["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{bad}: {body}"
        );
    }
    // The text form, as `meridian explain --live` prints it.
    let out = ctl(dir, &["explain", "www.example.com", "--live"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    let t = text(&out.stdout);
    assert!(
        t.contains("skipped: drained") && t.contains("192.0.2.20"),
        "{t}"
    );

    // undrain with MERIDIAN_TOKEN and an explicit --admin (so not the config's token).
    let out = meridian()
        .env("MERIDIAN_TOKEN", TOKEN)
        .args([
            "undrain",
            "--endpoint",
            "192.0.2.10",
            "--service",
            "www.example.com",
        ])
        .args(["--admin", &format!("http://127.0.0.1:{}", s.port())])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    assert!(!s.drained("192.0.2.10"));
    assert_eq!(answer(&live(dir)), set(&["192.0.2.10", "192.0.2.20"]));

    // Unknown region: 404 from the server, exit 1. Bad arguments: exit 1 without a call.
    let out = ctl(dir, &["drain", "--region", "mars"]);
    assert_eq!(code(&out), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("mars"), "{}", show(&out));
    for args in [
        // (An --endpoint without --service is every service's: SPEC "Day two".)
        &["drain", "--endpoint", "not-an-address"][..],
        &["drain"],
        &[
            "undrain",
            "--endpoint",
            "192.0.2.10",
            "--region",
            "us-east",
            "--service",
            "x",
        ],
        &["explain", "www.example.com", "--live", "--down", "us-east"],
    ] {
        let out = ctl(dir, args);
        assert_eq!(code(&out), Some(1), "{args:?}: {}", show(&out));
        assert!(!text(&out.stderr).is_empty(), "{args:?}");
    }

    // reload: ok, then a broken config is rejected with its problem printed, exit 1.
    let out = ctl(dir, &["reload"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("reloaded: generation"),
        "{}",
        show(&out)
    );
    let path = dir.join("meridian.toml");
    let good = std::fs::read_to_string(&path).expect("read config");
    std::fs::write(
        &path,
        format!(
            "{good}\n[[service]]\nname = \"x.example.com\"\npolicy = \"fastest\"\nendpoints = []\n"
        ),
    )
    .expect("write");
    let out = ctl(dir, &["reload"]);
    assert_eq!(code(&out), Some(1), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(err.contains("rejected"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with(&format!("{}:", path.display())) && l.contains("fastest")),
        "no file:line:col problem:\n{err}"
    );
    // The old config keeps serving.
    assert_eq!(answer(&live(dir)), set(&["192.0.2.10", "192.0.2.20"]));
    std::fs::write(&path, good).expect("restore config");

    // A server that is not there: exit 2.
    let closed = free_port();
    for args in [&["status"][..], &["reload", "--token", "x"]] {
        let out = meridian()
            .args(args)
            .args(["--admin", &format!("127.0.0.1:{closed}")])
            .output()
            .expect("run");
        assert_no_panic(&out);
        assert_eq!(code(&out), Some(2), "{args:?}: {}", show(&out));
        assert!(text(&out.stderr).contains("cannot reach"), "{}", show(&out));
    }
}

/// No health checks: every endpoint is up unless drained.
fn plain_config(extra_endpoint: bool) -> String {
    format!(
        r#"{HEAD}
[[service]]
name = "www.example.com"
policy = "round-robin"
max_answers = 8
endpoints = [
  {{ region = "us-east", address = "192.0.2.10" }},
  {{ region = "us-east", address = "192.0.2.11" }},
  {{ region = "eu-west", address = "192.0.2.20" }},
  {}
]
"#,
        if extra_endpoint {
            r#"{ region = "eu-west", address = "192.0.2.21" },"#
        } else {
            ""
        }
    )
}

#[test]
fn drains_survive_restarts_and_region_drains_cover_new_endpoints() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut s = Server::start(dir, &plain_config(false));
    let port = s.port();
    for args in [
        &["drain", "--region", "eu-west"][..],
        &[
            "drain",
            "--endpoint",
            "192.0.2.11",
            "--service",
            "www.example.com",
        ],
    ] {
        let out = ctl(dir, args);
        assert_eq!(code(&out), Some(0), "{args:?}: {}", show(&out));
    }
    assert!(
        dir.join("state/drains.json").is_file(),
        "state file not written"
    );
    assert_eq!(answer(&live(dir)), set(&["192.0.2.10"]));

    // A real restart of the process: the drains are back before it answers.
    s.stop();
    let mut s = Server::spawn(dir, port);
    assert!(s.drained("192.0.2.11") && s.drained("192.0.2.20"));
    assert!(!s.drained("192.0.2.10"));
    assert_eq!(answer(&live(dir)), set(&["192.0.2.10"]));
    let out = ctl(dir, &["status"]);
    let t = text(&out.stdout);
    assert!(
        t.contains("region eu-west") && t.contains("endpoint 192.0.2.11"),
        "{t}"
    );

    // A reload adds an endpoint to the drained region: the region drain covers it.
    std::fs::write(
        dir.join("meridian.toml"),
        plain_config(true).replace("{ADMIN}", &port.to_string()),
    )
    .expect("write config");
    let out = ctl(dir, &["reload"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    assert!(
        s.drained("192.0.2.21"),
        "new endpoint of a drained region is answered"
    );
    assert_eq!(answer(&live(dir)), set(&["192.0.2.10"]));

    // And after another restart; then undraining the region brings both back.
    s.stop();
    let s = Server::spawn(dir, port);
    assert!(s.drained("192.0.2.21") && s.drained("192.0.2.20"));
    let out = ctl(dir, &["undrain", "--region", "eu-west"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    assert_eq!(
        answer(&live(dir)),
        set(&["192.0.2.10", "192.0.2.20", "192.0.2.21"])
    );
    assert!(s.drained("192.0.2.11"), "the endpoint drain is its own");
}

#[test]
fn a_corrupt_state_file_is_logged_and_the_server_starts_without_drains() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("state")).expect("mkdir");
    std::fs::write(
        dir.join("state/drains.json"),
        "{\"version\": 1, \"drains\": [{\"dr",
    )
    .expect("write");
    let mut s = Server::start(dir, &plain_config(false));
    assert!(!s.drained("192.0.2.10") && !s.drained("192.0.2.20"));
    assert_eq!(
        answer(&live(dir)),
        set(&["192.0.2.10", "192.0.2.11", "192.0.2.20"])
    );
    // Drains still work and are saved over the broken file, which was kept aside.
    let out = ctl(dir, &["drain", "--region", "us-east"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    assert!(dir.join("state/drains.json.corrupt").is_file());
    let log = s.stop();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("starting without drains")
            && l.contains("drains.json")),
        "no error in the log:\n{log}"
    );
}

/// The lost drain state is shown (SPEC "Day two"), in `/status` and the metrics, until an
/// operator drains or undrains again.
#[test]
fn a_lost_drain_state_shows_in_status_and_metrics_until_an_operator_acts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("state")).expect("mkdir");
    std::fs::write(dir.join("state/drains.json"), "not json").expect("write");
    let s = Server::start(dir, &plain_config(false));
    let st = s.status();
    assert_eq!(st["drains_state"]["ok"], false, "{}", st["drains_state"]);
    let why = st["drains_state"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("drains.json"), "{why}");
    let metric = |want: &str| {
        let (code, body) = http(s.admin, "GET", "/metrics");
        assert_eq!(code, 200);
        assert!(
            body.lines()
                .any(|l| l == format!("meridian_drains_state_ok {want}")),
            "no meridian_drains_state_ok {want} in:\n{body}"
        );
    };
    metric("0");
    // Another reload does not clear it: only an operator's decision does.
    let out = ctl(dir, &["reload"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    assert_eq!(s.status()["drains_state"]["ok"], false);
    let out = ctl(dir, &["undrain", "--region", "us-east"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    assert_eq!(s.status()["drains_state"]["ok"], true);
    metric("1");
}

/// A drain whose region or endpoint a reload renamed or removed is kept, shown with
/// `"matches": 0`, warned about, and removed by an undrain with the words it was made with.
#[test]
fn drains_that_match_nothing_after_a_reload_are_kept_shown_and_can_be_undrained() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut s = Server::start(dir, &plain_config(true));
    for args in [
        &["drain", "--region", "eu-west"][..],
        &[
            "drain",
            "--endpoint",
            "192.0.2.11",
            "--service",
            "www.example.com",
        ],
    ] {
        let out = ctl(dir, args);
        assert_eq!(code(&out), Some(0), "{args:?}: {}", show(&out));
    }
    let matches = |st: &Value| -> Vec<(String, u64)> {
        st["drains"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let what = d["region"]
                    .as_str()
                    .or(d["endpoint"].as_str())
                    .unwrap_or("?")
                    .to_string();
                (what, d["matches"].as_u64().unwrap_or(u64::MAX))
            })
            .collect()
    };
    assert_eq!(
        matches(&s.status()),
        [("eu-west".to_string(), 2), ("192.0.2.11".to_string(), 1)]
    );
    // Rename the region and remove the endpoint.
    let renamed = plain_config(true)
        .replace("eu-west", "eu-central")
        .replace("{ region = \"us-east\", address = \"192.0.2.11\" },\n", "")
        .replace("{ADMIN}", &s.port().to_string());
    assert!(!renamed.contains("192.0.2.11"), "{renamed}");
    std::fs::write(dir.join("meridian.toml"), renamed).expect("write");
    let out = ctl(dir, &["reload"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    assert_eq!(
        matches(&s.status()),
        [("eu-west".to_string(), 0), ("192.0.2.11".to_string(), 0)],
        "drains lapsed"
    );
    // Undrain with the words they were made with removes them, from the file too.
    for args in [
        &["undrain", "--region", "eu-west"][..],
        &[
            "undrain",
            "--endpoint",
            "192.0.2.11",
            "--service",
            "www.example.com",
        ],
    ] {
        let out = ctl(dir, args);
        assert_eq!(code(&out), Some(0), "{args:?}: {}", show(&out));
    }
    assert_eq!(matches(&s.status()), []);
    let saved = std::fs::read_to_string(dir.join("state/drains.json")).expect("read");
    assert!(
        !saved.contains("eu-west") && !saved.contains("192.0.2.11"),
        "{saved}"
    );
    // A drain of something that never existed is still refused.
    let out = ctl(dir, &["undrain", "--region", "nowhere"]);
    assert_ne!(code(&out), Some(0), "{}", show(&out));
    let log = s.stop();
    for what in ["region eu-west", "endpoint 192.0.2.11 of www.example.com"] {
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains(what) && l.contains("matches nothing")),
            "no reload warning about {what}:\n{log}"
        );
    }
}

#[test]
fn new_endpoints_are_probed_at_once_at_start_and_after_a_reload() {
    // With a 60 s interval a jittered first probe would come anywhere in the first minute.
    let h = health();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let config = |with_new: bool| {
        format!(
            r#"{HEAD}
[health.slow]
kind = "http"
interval = "60s"
timeout = "2s"

[[service]]
name = "www.example.com"
policy = "round-robin"
max_answers = 8
health = "slow"
endpoints = [
  {{ region = "us-east", address = "192.0.2.10", check = "{a}" }},
  {{ region = "us-east", address = "192.0.2.11", check = "{b}" }},
  {}
]
"#,
            if with_new {
                format!(
                    r#"{{ region = "eu-west", address = "192.0.2.20", check = "{}" }},"#,
                    h.url("/ok/new")
                )
            } else {
                String::new()
            },
            a = h.url("/ok/a"),
            b = h.url("/ok/b"),
        )
    };
    let spawned = Instant::now();
    let s = Server::start(dir, &config(false));
    let up = Instant::now();
    // Probed by the time the admin API answers, or very soon after.
    assert!(
        wait_until(Duration::from_secs(5), || h.first_hit("/ok/a").is_some()
            && h.first_hit("/ok/b").is_some()),
        "first probes did not come at start"
    );
    for p in ["/ok/a", "/ok/b"] {
        let t = h.first_hit(p).expect("hit");
        eprintln!(
            "{p}: first probe {:?} after spawn ({:?} after the API answered)",
            t - spawned,
            t.saturating_duration_since(up)
        );
        assert!(
            t.saturating_duration_since(up) < Duration::from_secs(3),
            "{p}"
        );
    }

    std::fs::write(
        dir.join("meridian.toml"),
        config(true).replace("{ADMIN}", &s.port().to_string()),
    )
    .expect("write");
    let out = ctl(dir, &["reload"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    let reloaded = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || h.first_hit("/ok/new").is_some()),
        "the new endpoint was not probed"
    );
    let t = h.first_hit("/ok/new").expect("hit");
    let after = t.saturating_duration_since(reloaded);
    eprintln!("new endpoint: first probe {after:?} after the reload returned");
    // 50 ms supervisor poll + connect; generous for a loaded machine, far below 60 s.
    assert!(after < Duration::from_secs(3), "{after:?}");
    // It has a last probe in /status right away.
    assert!(wait_until(Duration::from_secs(3), || !endpoint(
        &s.status(),
        "192.0.2.20"
    )["last_probe"]
        .is_null()));
}

#[test]
fn state_dir_is_a_config_key_and_holds_the_drains() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let config = plain_config(false).replace(
        "udp_sockets = 1\n",
        "udp_sockets = 1\nstate_dir = \"var/meridian\"\n",
    );
    std::fs::create_dir_all(dir.join("zones")).expect("mkdir");
    let _s = Server::start(dir, &config);
    let out = ctl(dir, &["check"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    let out = ctl(dir, &["drain", "--region", "us-east"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    assert!(dir.join("var/meridian/drains.json").is_file());
    assert!(!dir.join("state").exists());
}

/// One UDP query to `addr`: the response code and the answer addresses.
fn ask(addr: SocketAddr, name: &str) -> (hickory_proto::op::ResponseCode, Vec<String>) {
    let q = common::query(name, hickory_proto::rr::RecordType::A);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    sock.send_to(&q.to_vec().expect("encode"), addr)
        .expect("send");
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("an answer");
    let m = hickory_proto::op::Message::from_vec(&buf[..n]).expect("decode");
    let answers = m.answers.iter().map(|r| r.data.to_string()).collect();
    (m.metadata.response_code, answers)
}

const BROKEN_ZONE: &str = "$TTL 300
@ SOA ns1 h 1 2 3 4 5
@ NS ns1
ns1 A 192.0.2.1
www A 192.0.2.300
";

const GOOD_ORG_ZONE: &str = "$TTL 300
@ SOA ns1 h 1 2 3 4 5
@ NS ns1
ns1 A 192.0.2.1
www A 192.0.2.7
";

/// SPEC "Day two": a server started with a broken zone file serves the other zones, answers
/// SERVFAIL inside the broken one and says so at ERROR, in `/status` and in the metrics;
/// `check` still fails; a reload is all or nothing for what is serving.
#[test]
fn a_broken_zone_file_does_not_take_the_other_zones_down() {
    use hickory_proto::op::ResponseCode;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (port, dns_port) = (free_port(), free_port());
    let dns: SocketAddr = ([127, 0, 0, 1], dns_port).into();
    let config = plain_config(false)
        .replace("127.0.0.1:0", &format!("127.0.0.1:{dns_port}"))
        .replace("{ADMIN}", &port.to_string());
    write_config_dir(
        dir,
        &[
            ("example.com.zone", EXAMPLE_ZONE),
            ("broken.org.zone", BROKEN_ZONE),
        ],
        &config,
    );
    let mut s = Server::spawn(dir, port);
    let (rc, a) = ask(dns, "www.example.com.");
    assert_eq!(rc, ResponseCode::NoError);
    assert_eq!(a.len(), 3, "{a:?}");
    assert_eq!(ask(dns, "ns1.broken.org.").0, ResponseCode::ServFail);
    assert_eq!(ask(dns, "broken.org.").0, ResponseCode::ServFail);
    // Outside every zone is still REFUSED.
    assert_eq!(ask(dns, "www.example.net.").0, ResponseCode::Refused);

    let zones = |st: &Value| -> Vec<(String, bool, bool)> {
        st["zones"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|z| {
                (
                    z["name"].as_str().unwrap_or("?").to_string(),
                    z["loaded"].as_bool().unwrap_or(false),
                    z["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("192.0.2.300")),
                )
            })
            .collect()
    };
    assert_eq!(
        zones(&s.status()),
        [
            ("broken.org".to_string(), false, true),
            ("example.com".to_string(), true, false)
        ]
    );
    let (_, metrics) = http(s.admin, "GET", "/metrics");
    for want in [
        "meridian_zone_loaded{zone=\"broken.org\"} 0",
        "meridian_zone_loaded{zone=\"example.com\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == want),
            "no {want} in:\n{metrics}"
        );
    }
    let out = ctl(dir, &["check"]);
    assert_eq!(code(&out), Some(1), "{}", show(&out));

    // A reload that would break a served zone is rejected whole: example.com keeps serving.
    let good_example = EXAMPLE_ZONE.to_string();
    std::fs::write(
        dir.join("zones/example.com.zone"),
        format!("{good_example}\nbad A 1.2.3\n"),
    )
    .expect("write");
    std::fs::write(dir.join("zones/new.org.zone"), GOOD_ORG_ZONE).expect("write");
    let out = ctl(dir, &["reload"]);
    assert_ne!(code(&out), Some(0), "{}", show(&out));
    assert_eq!(ask(dns, "www.example.com.").0, ResponseCode::NoError);
    assert_eq!(ask(dns, "www.new.org.").0, ResponseCode::Refused);
    // With example.com fixed, the still-broken zone does not block the rest of the reload.
    std::fs::write(dir.join("zones/example.com.zone"), &good_example).expect("write");
    let out = ctl(dir, &["reload"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    assert_eq!(ask(dns, "www.new.org.").1, ["192.0.2.7"]);
    assert_eq!(ask(dns, "ns1.broken.org.").0, ResponseCode::ServFail);
    // Fixed: served.
    std::fs::write(
        dir.join("zones/broken.org.zone"),
        BROKEN_ZONE.replace(".300", ".30"),
    )
    .expect("write");
    let out = ctl(dir, &["reload"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    assert_eq!(ask(dns, "www.broken.org.").1, ["192.0.2.30"]);
    assert!(zones(&s.status()).iter().all(|z| z.1));
    let log = s.stop();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("broken.org") && l.contains("SERVFAIL")),
        "no error about the zone in the log:\n{log}"
    );

    // A config that is not TOML still refuses to start.
    std::fs::write(dir.join("meridian.toml"), "[server\nlisten = ").expect("write");
    let out = meridian()
        .args(["serve", "--config"])
        .arg(dir.join("meridian.toml"))
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(1), "{}", show(&out));
}

/// `meridian status | head -1` and `meridian undrain … | grep -q`: the reader goes away
/// before the command writes; the command ends quietly with its own exit status.
#[test]
fn a_closed_pipe_ends_control_commands_quietly_with_their_own_status() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let s = Server::start(dir, &plain_config(false));
    let closed = |args: &[&str]| {
        let mut child = meridian()
            .args(args)
            .arg("--config")
            .arg(dir.join("meridian.toml"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        // The reading end is gone before the command has anything to write.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        assert_no_panic(&out);
        assert_eq!(code(&out), Some(0), "{args:?}: {}", show(&out));
        assert!(text(&out.stderr).is_empty(), "{}", show(&out));
    };
    closed(&["status"]);
    closed(&["status", "--json"]);
    closed(&["drain", "--region", "eu-west"]);
    assert!(s.drained("192.0.2.20"), "the drain was made");
    closed(&["undrain", "--region", "eu-west"]);
    assert!(!s.drained("192.0.2.20"), "the undrain was made");
    closed(&["reload"]);
    closed(&["explain", "www.example.com", "--live"]);
}

/// The admin API is found without flags from anywhere: `--admin`, `--config`,
/// `$MERIDIAN_ADMIN`, `$MERIDIAN_CONFIG`, then the default places.
#[test]
fn control_commands_find_the_admin_api_from_flags_environment_and_default_places() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let s = Server::start(dir, &plain_config(false));
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let status = |envs: &[(&str, String)], args: &[&str]| {
        let mut c = meridian();
        c.current_dir(elsewhere.path())
            .env_remove("MERIDIAN_ADMIN")
            .env_remove("MERIDIAN_CONFIG")
            .arg("status")
            .arg("--json")
            .args(args);
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().expect("run");
        assert_no_panic(&out);
        out
    };
    let config = dir.join("meridian.toml").display().to_string();
    let url = format!("127.0.0.1:{}", s.port());
    let nobody = format!("127.0.0.1:{}", free_port());
    let ok = |out: Output| {
        assert_eq!(code(&out), Some(0), "{}", show(&out));
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(v["site"], "ctl-test");
    };
    let unreachable = |out: Output| assert_eq!(code(&out), Some(2), "{}", show(&out));
    // Nothing to go by in an empty folder: a clear error naming the places.
    let out = status(&[], &[]);
    assert_eq!(code(&out), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("/etc/meridian/meridian.toml")
            && text(&out.stderr).contains("MERIDIAN_ADMIN"),
        "{}",
        show(&out)
    );
    ok(status(&[], &["--admin", &url]));
    ok(status(&[], &["--config", &config]));
    ok(status(&[("MERIDIAN_ADMIN", url.clone())], &[]));
    ok(status(&[("MERIDIAN_CONFIG", config.clone())], &[]));
    // The order: --admin before --config before $MERIDIAN_ADMIN before $MERIDIAN_CONFIG.
    unreachable(status(&[], &["--admin", &nobody, "--config", &config]));
    ok(status(
        &[("MERIDIAN_ADMIN", nobody.clone())],
        &["--config", &config],
    ));
    unreachable(status(
        &[
            ("MERIDIAN_ADMIN", nobody.clone()),
            ("MERIDIAN_CONFIG", config.clone()),
        ],
        &[],
    ));
    // config/meridian.toml of the current folder.
    std::fs::create_dir_all(elsewhere.path().join("config")).expect("mkdir");
    std::fs::copy(&config, elsewhere.path().join("config/meridian.toml")).expect("copy");
    ok(status(&[], &[]));
}

/// `drain --endpoint ADDR` without `--service` drains it in every service that has it.
#[test]
fn drain_endpoint_without_service_acts_on_every_service_that_has_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let config = format!(
        "{}\n[[service]]\nname = \"lb.example.com\"\npolicy = \"round-robin\"\nendpoints = [\n  \
         {{ region = \"eu-west\", address = \"192.0.2.20\" }},\n  \
         {{ region = \"us-east\", address = \"192.0.2.30\" }},\n]\n",
        plain_config(false)
    );
    let s = Server::start(dir, &config);
    // Region rows count hosts: 192.0.2.20 serves two services but is one machine.
    let out = ctl(dir, &["status"]);
    let t = text(&out.stdout);
    let region_row = |name: &str| {
        t.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.len() == 5 && w[0] == name)
            .unwrap_or_else(|| panic!("no {name} row:\n{t}"))
            .join(" ")
    };
    assert_eq!(region_row("eu-west"), "eu-west 1 1 0 0", "{t}");
    assert_eq!(region_row("us-east"), "us-east 3 3 0 0", "{t}");
    assert!(t.contains("HOSTS"), "{t}");
    let out = ctl(dir, &["drain", "--endpoint", "192.0.2.20"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    assert!(text(&out.stdout).contains("2 endpoints"), "{}", show(&out));
    let st = s.status();
    let drained: Vec<(String, String)> = st["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|svc| {
            svc["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["drained"] == true)
                .map(move |e| {
                    (
                        svc["name"].as_str().unwrap_or("?").to_string(),
                        e["address"].as_str().unwrap_or("?").to_string(),
                    )
                })
        })
        .collect();
    assert_eq!(
        drained,
        [
            ("www.example.com".to_string(), "192.0.2.20".to_string()),
            ("lb.example.com".to_string(), "192.0.2.20".to_string())
        ]
    );
    let out = ctl(dir, &["undrain", "--endpoint", "192.0.2.20"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    assert!(!s.drained("192.0.2.20"));
}

/// SPEC "Behaviour on the wire", health: an endpoint a reload adds is not answered before its
/// first probe passes (a refusing health URL: never), and joins on that first good probe
/// whatever `rise` says; endpoints there at start are answered at once, until their first
/// probe says otherwise.
#[test]
fn an_endpoint_added_by_a_reload_is_not_answered_before_it_was_seen_working() {
    let h = health();
    // A health server that accepts connections and never answers: its probes time out.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hang_url = format!("http://{}/health", hanging.local_addr().expect("addr"));
    // Nothing listens here: connections are refused.
    let refused_url = format!("http://127.0.0.1:{}/health", free_port());
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (port, dns_port) = (free_port(), free_port());
    let dns: SocketAddr = ([127, 0, 0, 1], dns_port).into();
    let config = |added: &str| {
        format!(
            r#"{HEAD}
[health.web]
kind = "http"
interval = "60s"
timeout = "5s"
rise = 2
fall = 3

[[service]]
name = "www.example.com"
policy = "round-robin"
max_answers = 8
health = "web"
endpoints = [
  {{ region = "us-east", address = "192.0.2.10", check = "{ok}" }},
  {{ region = "us-east", address = "192.0.2.11", check = "{hang_url}" }},
  {added}
]
"#,
            ok = h.url("/ok/a"),
        )
        .replace("127.0.0.1:0", &format!("127.0.0.1:{dns_port}"))
        .replace("{ADMIN}", &port.to_string())
    };
    write_config_dir(dir, &[("example.com.zone", EXAMPLE_ZONE)], &config(""));
    let started = Instant::now();
    let s = Server::spawn(dir, port);
    // At start: the endpoint whose probe has not answered yet is served (initial = up).
    let (_, a) = ask(dns, "www.example.com.");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "too slow to judge"
    );
    assert!(a.contains(&"192.0.2.11".to_string()), "{a:?}");

    let added = format!(
        r#"{{ region = "eu-west", address = "192.0.2.20", check = "{refused_url}" }},
  {{ region = "eu-west", address = "192.0.2.21", check = "{}" }},
  {{ region = "eu-west", address = "192.0.2.22", check = "{hang_url}" }},"#,
        h.url("/ok/new")
    );
    std::fs::write(dir.join("meridian.toml"), config(&added)).expect("write");
    let out = ctl(dir, &["reload"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    // For two seconds after the reload: never the refused nor the unanswered new endpoint;
    // the working one joins after its first probe (not after `rise` = 2 intervals of 60 s).
    let t0 = Instant::now();
    let mut joined = None;
    while t0.elapsed() < Duration::from_secs(2) {
        let (_, a) = ask(dns, "www.example.com.");
        for never in ["192.0.2.20", "192.0.2.22"] {
            assert!(
                !a.contains(&never.to_string()),
                "{never} answered {:?} after the reload, before any probe passed: {a:?}",
                t0.elapsed()
            );
        }
        if joined.is_none() && a.contains(&"192.0.2.21".to_string()) {
            joined = Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let joined = joined.expect("the working new endpoint never joined the answers");
    eprintln!("new working endpoint answered {joined:?} after the reload");
    let st = s.status();
    assert_eq!(endpoint(&st, "192.0.2.20")["healthy"], false, "{st}");
    assert_eq!(endpoint(&st, "192.0.2.21")["healthy"], true, "{st}");
    drop(hanging);
}

/// Offline `explain` applies the saved drains (and says so), and says when a name is outside
/// every zone instead of calling it static data.
#[test]
fn offline_explain_applies_saved_drains_and_names_what_is_outside_every_zone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut s = Server::start(dir, &plain_config(false));
    let out = ctl(dir, &["drain", "--region", "eu-west"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    s.stop();
    let offline = |args: &[&str]| {
        let out = meridian()
            .arg("explain")
            .args(args)
            .arg("--config")
            .arg(dir.join("meridian.toml"))
            .output()
            .expect("run");
        assert_no_panic(&out);
        assert_eq!(code(&out), Some(0), "{}", show(&out));
        text(&out.stdout)
    };
    let v: Value = serde_json::from_str(&offline(&["www.example.com", "--json"])).expect("JSON");
    assert_eq!(answer(&v), set(&["192.0.2.10", "192.0.2.11"]), "{v}");
    let t = offline(&["www.example.com"]);
    assert!(
        t.lines()
            .any(|l| l.starts_with("note") && l.contains("1 saved drain rule(s)")),
        "{t}"
    );
    let t = offline(&["www.example.net"]);
    assert!(t.contains("outside every zone"), "{t}");
    assert!(!t.contains("static data"), "{t}");
    let t = offline(&["mail.example.com"]);
    assert!(t.contains("static data from zone example.com."), "{t}");
}

/// Issue 18's smaller log and metrics items: health DOWN at WARN, "admin API listening" once,
/// `took_ms` rounded, and the help of `meridian_service_when_all_down_empty` saying what 0 is.
#[test]
fn down_is_a_warning_the_api_is_announced_once_and_reload_times_are_rounded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let refused_url = format!("http://127.0.0.1:{}/health", free_port());
    let config = format!(
        r#"{HEAD}
[health.web]
kind = "http"
interval = "1s"
timeout = "500ms"
rise = 1
fall = 1

[[service]]
name = "www.example.com"
policy = "round-robin"
health = "web"
endpoints = [
  {{ region = "us-east", address = "192.0.2.10", check = "{refused_url}" }},
]
"#
    );
    let mut s = Server::start(dir, &config);
    assert!(
        wait_until(Duration::from_secs(5), || !s.status()["services"][0]
            ["endpoints"][0]["healthy"]
            .as_bool()
            .unwrap_or(true)),
        "the refused endpoint did not go down"
    );
    let (_, metrics) = http(s.admin, "GET", "/metrics");
    let help = metrics
        .lines()
        .find(|l| l.starts_with("# HELP meridian_service_when_all_down_empty"))
        .unwrap_or_else(|| panic!("no help line:\n{metrics}"));
    assert!(help.contains("servfail"), "{help}");
    let out = ctl(dir, &["reload"]);
    assert_eq!(code(&out), Some(0), "{}", show(&out));
    let log = s.stop();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("health: endpoint DOWN")),
        "DOWN not at WARN:\n{log}"
    );
    let listening = log
        .lines()
        .filter(|l| l.contains("admin API listening"))
        .count();
    assert_eq!(listening, 1, "{log}");
    let took = log
        .lines()
        .find(|l| l.contains("reloaded"))
        .and_then(|l| l.split("took_ms=").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no took_ms:\n{log}"));
    let decimals = took.split_once('.').map_or(0, |(_, d)| d.len());
    assert!(decimals <= 1, "took_ms={took}");
}
