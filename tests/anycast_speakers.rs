//! Anycast without root (SPEC "Anycast"): the real binary as an ExaBGP API process (what it
//! writes on stdout, and nothing else), and the controller against a real server whose
//! listener stops answering. The proof with real BIRD and ExaBGP is tests/anycast/run.sh.

mod common;

use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use meridian::anycast::speaker::Speaker;
use meridian::config::anycast::{Require, Settings, SpeakerKind};

const ZONE: &str = "$TTL 300
@    IN SOA ns1 hostmaster ( 1 3600 600 86400 300 )
     IN NS  ns1
ns1  IN A   192.0.2.53
";

#[test]
fn exabgp_process_writes_route_commands_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
    std::fs::write(dir.path().join("zones/example.net.zone"), ZONE).expect("zone");
    let config = dir.path().join("meridian.toml");
    std::fs::write(
        &config,
        r#"
[server]
listen = ["127.0.0.1:0"]
zones = "zones"
udp_sockets = 1
[site]
id = "exabgp-test"
[anycast]
prefixes = ["198.51.100.53/32", "2001:db8:53::53/128"]
speaker = "exabgp"
interval = "100ms"
rise = 2
fall = 2
withdraw_file = "withdraw"
shutdown_grace = "300ms"
"#,
    )
    .expect("config");
    let mut serve = ServerProcess::spawn(serve_command(&config).env("MERIDIAN_LOG", "debug"));
    let mut seen = Vec::new();
    let mut expect = |serve: &mut ServerProcess, want: &str, within: Duration| {
        for prefix in ["198.51.100.53/32", "2001:db8:53::53/128"] {
            let line = serve
                .next_stdout_line(within)
                .unwrap_or_else(|| panic!("no `{want}` line within {within:?}; got {seen:?}"));
            assert_eq!(line, format!("{want} route {prefix} next-hop self"));
            seen.push(line);
            // ExaBGP acknowledges every command on the process's stdin.
            let _ = serve.stdin().write_all(b"done\n");
        }
    };
    // Withdrawn at start, announced after rise (2) good checks at 100 ms: the first check runs
    // at once, the second one interval later.
    expect(&mut serve, "withdraw", Duration::from_secs(5));
    expect(&mut serve, "announce", Duration::from_secs(5));
    // Measured between the server's own log lines (their timestamps), not from when this test
    // started the process or read a line: the controller's start, and the announce.
    let withdrawn = logged_at(&serve, "anycast: withdrawn until 2 good self-check(s)");
    let announced = logged_at(&serve, "anycast: announcing");
    let rise = announced
        .duration_since(withdrawn)
        .expect("announce logged after the start");
    assert!(
        rise >= Duration::from_millis(100),
        "announced {rise:?} after the start: before the second good check (rise = 2, 100 ms)"
    );
    std::fs::write(dir.path().join("withdraw"), "").expect("touch");
    expect(&mut serve, "withdraw", Duration::from_secs(2));
    std::fs::remove_file(dir.path().join("withdraw")).expect("rm");
    expect(&mut serve, "announce", Duration::from_secs(2));
    // SIGTERM: the route goes first, the process keeps answering for the grace, then exits.
    serve.signal(libc::SIGTERM);
    expect(&mut serve, "withdraw", Duration::from_secs(2));
    let status = serve
        .wait_exit(Duration::from_secs(10))
        .expect("exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
    // The grace runs from the confirmed withdraw to the end of answering ("shutting down", when
    // the listeners start to close), by the server's clock. How fast the withdraw follows the
    // signal is measured by tests/anycast/run.sh ("SIGTERM -> exit"), not asserted here.
    let withdrawn = logged_at(&serve, "anycast: withdrawn for shutdown");
    let closing = logged_at(&serve, "shutting down");
    let grace = closing
        .duration_since(withdrawn)
        .expect("shutting down logged after the withdraw");
    assert!(
        grace >= Duration::from_millis(300),
        "answering stopped {grace:?} after the withdraw, before the 300 ms grace"
    );
    // Nothing else ever reached stdout; the logs went to stderr.
    let rest = serve.stdout_lines().split_off(seen.len());
    assert!(rest.is_empty(), "more on stdout: {rest:?}");
    let logs = serve.stderr_lines();
    assert!(
        logs.iter().any(|l| l.contains("anycast: announcing")),
        "{logs:?}"
    );
    assert!(
        logs.iter().any(|l| l.contains("reason=\"withdraw-file\"")),
        "{logs:?}"
    );
}

#[test]
fn check_reports_every_anycast_problem_without_bird() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
    std::fs::write(dir.path().join("zones/example.net.zone"), ZONE).expect("zone");
    let config = dir.path().join("meridian.toml");
    let good = "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\n[anycast]\n\
                prefixes = [\"198.51.100.53/32\"]\nspeaker = \"bird\"\n\
                bird_socket = \"/nonexistent/bird.ctl\"\n";
    std::fs::write(&config, good).expect("config");
    let ok = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("check");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::fs::write(
        &config,
        "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\n[anycast]\n\
         prefixes = [\"198.51.100.53/33\"]\nspeaker = \"bird\"\n\
         bird_protocol = \"x y\"\nrise = 0\ninterval = \"soon\"\nrequire = \"all\"\n",
    )
    .expect("config");
    let bad = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("check");
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stderr);
    for (line, key) in [
        (5, "anycast.prefixes"),
        (7, "anycast.bird_protocol"),
        (8, "anycast.rise"),
        (9, "anycast.interval"),
        (10, "anycast.require"),
    ] {
        let want = format!("meridian.toml:{line}:");
        assert!(
            text.lines().any(|l| l.contains(&want) && l.contains(key)),
            "no {key} at line {line} in:\n{text}"
        );
    }
}

/// Records what the controller told it.
struct Recorder(Arc<Mutex<Vec<bool>>>);

impl Speaker for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn start(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn set(&mut self, announce: bool) -> Result<(), String> {
        self.0.lock().unwrap().push(announce);
        Ok(())
    }
}

/// When the server logged the first stderr line containing `what`: the timestamp that opens
/// every log line (RFC 3339, microseconds). The line may still be on its way from the server's
/// stderr (it writes stdout and stderr separately), so it is waited for, up to 5 s.
fn logged_at(serve: &ServerProcess, what: &str) -> SystemTime {
    let end = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let lines = serve.stderr_lines();
        if let Some(l) = lines.iter().find(|l| l.contains(what)) {
            break l.clone();
        }
        if Instant::now() >= end {
            panic!("no `{what}` in the log within 5 s:\n{}", lines.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stamp = line.split_whitespace().next().unwrap_or_default();
    humantime::parse_rfc3339(stamp).unwrap_or_else(|e| panic!("no timestamp in `{line}`: {e}"))
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_listener_that_stops_answering_is_withdrawn() {
    let server = TestServer::start(&[("example.net.zone", ZONE)], "");
    let settings = Settings {
        prefixes: vec!["198.51.100.53/32".into()],
        speaker: SpeakerKind::Exabgp,
        interval: Duration::from_millis(100),
        rise: 2,
        fall: 2,
        require: Require::Dns,
        withdraw_file: None,
        shutdown_grace: Duration::ZERO,
    };
    let told = Arc::new(Mutex::new(Vec::new()));
    let a = meridian::anycast::start_with(
        server.shared.clone(),
        vec![server.addr],
        settings,
        Box::new(Recorder(told.clone())),
    )
    .expect("start");
    assert_eq!(
        told.lock().unwrap().first(),
        Some(&false),
        "withdrawn at start"
    );
    wait_for("announced", Duration::from_secs(3), || a.announced());
    assert_eq!(a.status_json()["reason"], "self-check");
    let addr = server.addr;
    drop(server); // the listener is gone: SOA queries go unanswered
    let gone = Instant::now();
    wait_for("withdrawn", Duration::from_secs(3), || !a.announced());
    // fall (2) checks at 100 ms, each waiting up to 500 ms for its answer.
    assert!(
        gone.elapsed() < Duration::from_millis(1500),
        "{:?}",
        gone.elapsed()
    );
    let s = a.status_json();
    assert_eq!(s["reason"], "self-check");
    assert_eq!(s["announced"], false);
    assert_eq!(s["last_check"]["ok"], false);
    assert!(
        s["last_check"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&addr.to_string())),
        "{s}"
    );
    assert_eq!(told.lock().unwrap().last(), Some(&false));
}

/// `require = "any-service"`: the site stays announced while at least one service has a
/// healthy, undrained endpoint (one service down is not enough to withdraw, as it would be
/// under `every-service`), withdraws with reason `services` when none has, and announces
/// again when one comes back. A drained endpoint counts as down.
#[test]
fn any_service_withdraws_only_when_no_service_is_up() {
    let services = r#"
[[service]]
name = "a.example.net"
policy = "round-robin"
endpoints = [ { address = "192.0.2.1" } ]
[[service]]
name = "b.example.net"
policy = "round-robin"
endpoints = [ { address = "192.0.2.2" } ]
"#;
    let server = TestServer::start(&[("example.net.zone", ZONE)], services);
    let settings = Settings {
        prefixes: vec!["198.51.100.53/32".into()],
        speaker: SpeakerKind::Exabgp,
        interval: Duration::from_millis(100),
        rise: 2,
        fall: 2,
        require: Require::AnyService,
        withdraw_file: None,
        shutdown_grace: Duration::ZERO,
    };
    let told = Arc::new(Mutex::new(Vec::new()));
    let a = meridian::anycast::start_with(
        server.shared.clone(),
        vec![server.addr],
        settings,
        Box::new(Recorder(told.clone())),
    )
    .expect("start");
    wait_for("announced", Duration::from_secs(3), || a.announced());
    let (ea, eb) = (
        server.endpoint_state("a.example.net", "192.0.2.1"),
        server.endpoint_state("b.example.net", "192.0.2.2"),
    );

    // One service down: still announced, for ten checks (fall is two).
    ea.set_healthy(false);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1000) {
        assert!(
            a.announced(),
            "withdrawn with service b still up: {}",
            a.status_json()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The other one drained: no service is up, the route goes.
    eb.set_drained(true);
    wait_for("withdrawn", Duration::from_secs(3), || !a.announced());
    assert_eq!(a.status_json()["reason"], "services", "{}", a.status_json());
    assert_eq!(told.lock().unwrap().last(), Some(&false));
    // One back: announced again after rise good checks.
    ea.set_healthy(true);
    wait_for("announced again", Duration::from_secs(3), || a.announced());
    assert_eq!(told.lock().unwrap().last(), Some(&true));
}

/// SPEC "Day two": a reload applies a changed `[anycast]`: here a withdraw file added and new
/// rise/fall/interval, which `/status` shows and the controller acts on.
#[test]
fn a_reload_applies_a_changed_anycast_section() {
    let section = |extra: &str| {
        format!(
            "[anycast]\nprefixes = [\"198.51.100.53/32\"]\nspeaker = \"exabgp\"\n\
             interval = \"100ms\"\nrise = 1\nfall = 1\n{extra}"
        )
    };
    let server = TestServer::start(&[("example.net.zone", ZONE)], &section(""));
    let settings = server
        .shared
        .load()
        .config
        .anycast
        .clone()
        .expect("[anycast] read");
    let told = Arc::new(Mutex::new(Vec::new()));
    let a = meridian::anycast::start_with(
        server.shared.clone(),
        vec![server.addr],
        settings,
        Box::new(Recorder(told.clone())),
    )
    .expect("start");
    wait_for("announced", Duration::from_secs(3), || a.announced());
    assert_eq!(a.status_json()["withdraw_file"], serde_json::Value::Null);

    let flag = server.dir.path().join("withdraw-now");
    let text = std::fs::read_to_string(server.config_path()).expect("read");
    let text = text.replace(
        &section(""),
        &section(&format!("withdraw_file = \"{}\"\n", flag.display()))
            .replace("rise = 1", "rise = 3")
            .replace("interval = \"100ms\"", "interval = \"150ms\""),
    );
    assert!(text.contains("withdraw-now"), "{text}");
    std::fs::write(server.config_path(), text).expect("write");
    server.reload();
    wait_for(
        "the new settings in /status",
        Duration::from_secs(3),
        || a.status_json()["rise"] == 3,
    );
    let st = a.status_json();
    assert_eq!(st["interval_ms"], 150, "{st}");
    assert_eq!(st["withdraw_file"], flag.display().to_string(), "{st}");
    assert!(a.announced(), "a reload alone does not withdraw");
    // The new withdraw file is acted on.
    std::fs::write(&flag, "").expect("touch");
    wait_for(
        "withdrawn by the new withdraw file",
        Duration::from_secs(3),
        || !a.announced(),
    );
    assert_eq!(a.status_json()["reason"], "withdraw-file");
    std::fs::remove_file(&flag).expect("rm");
    wait_for("announced again", Duration::from_secs(3), || a.announced());
    assert_eq!(told.lock().unwrap().last(), Some(&true));
}

/// The controller is a handle of the server that started it, not process-wide state: of two
/// servers in one process, only the one whose controller runs shows it in `/status` and the
/// metrics (with the old static `anycast::CURRENT`, both did).
#[test]
fn each_server_shows_only_its_own_controller() {
    let admin = "[admin]\nlisten = \"127.0.0.1:0\"\n";
    let (with, without) = (
        TestServer::start(&[("example.net.zone", ZONE)], admin),
        TestServer::start(&[("example.net.zone", ZONE)], admin),
    );
    let settings = Settings {
        prefixes: vec!["198.51.100.53/32".into()],
        speaker: SpeakerKind::Exabgp,
        interval: Duration::from_millis(100),
        rise: 1,
        fall: 2,
        require: Require::Dns,
        withdraw_file: None,
        shutdown_grace: Duration::ZERO,
    };
    let a = meridian::anycast::start_with(
        with.shared.clone(),
        vec![with.addr],
        settings,
        Box::new(Recorder(Arc::new(Mutex::new(Vec::new())))),
    )
    .expect("start");
    let api = |s: &TestServer, a: Option<Arc<meridian::anycast::Anycast>>| {
        let reloader = meridian::reload::Reloader::new(s.shared.clone(), s.config_path());
        if let Some(a) = a {
            reloader.control().anycast.set(a);
        }
        let state = meridian::admin::AdminState::from_config(reloader).expect("[admin]");
        s.block_on(meridian::admin::start(state)).expect("admin")
    };
    let (api_with, api_without) = (api(&with, Some(a.clone())), api(&without, None));
    wait_for("announced", Duration::from_secs(3), || a.announced());
    let get = |addr, path: &str| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        http_exchange(addr, &req).expect("an HTTP response").2
    };
    let status = |addr| -> serde_json::Value {
        serde_json::from_str(&get(addr, "/status")).expect("status JSON")
    };
    assert_eq!(status(api_with.addr)["anycast"]["announced"], true);
    assert!(status(api_without.addr)["anycast"].is_null());
    assert!(get(api_with.addr, "/metrics").contains("meridian_anycast_announced 1"));
    let m = get(api_without.addr, "/metrics");
    assert!(!m.contains("meridian_anycast"), "{m}");
}
