//! Anycast without root (SPEC "Anycast"): the real binary as an ExaBGP API process (what it
//! writes on stdout, and nothing else), and the controller against a real server whose
//! listener stops answering. The proof with real BIRD and ExaBGP is tests/anycast/run.sh.

mod common;

use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use meridian::anycast::config::{Require, Settings, SpeakerKind};
use meridian::anycast::speaker::Speaker;

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
    let started = Instant::now();
    // Withdrawn at start, announced after rise (2) good checks at 100 ms.
    expect(&mut serve, "withdraw", Duration::from_secs(5));
    expect(&mut serve, "announce", Duration::from_secs(5));
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "announced before two checks"
    );
    std::fs::write(dir.path().join("withdraw"), "").expect("touch");
    expect(&mut serve, "withdraw", Duration::from_secs(2));
    std::fs::remove_file(dir.path().join("withdraw")).expect("rm");
    expect(&mut serve, "announce", Duration::from_secs(2));
    // SIGTERM: the route goes at once, the process exits after the grace.
    let term = Instant::now();
    serve.signal(libc::SIGTERM);
    expect(&mut serve, "withdraw", Duration::from_secs(2));
    let withdrawn_after = term.elapsed();
    let status = serve
        .wait_exit(Duration::from_secs(10))
        .expect("exit after SIGTERM");
    let exited_after = term.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        withdrawn_after < Duration::from_millis(250),
        "{withdrawn_after:?}"
    );
    assert!(
        exited_after >= Duration::from_millis(300),
        "exited {exited_after:?} after SIGTERM, before the 300 ms grace"
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
