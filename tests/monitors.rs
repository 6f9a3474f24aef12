//! Several monitors per endpoint (SPEC "Pools, several monitors, tiers"): `health` lists with
//! `health_min`, `exec` checks (a real script this test writes, run without a shell, killed at
//! its timeout) and `push` states (real `PUT /api/v1/health` calls to the real admin API,
//! expiring when not refreshed). The server is real, on loopback; the HTTP checks hit a real
//! health server the test runs.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

const ZONE: &str = "$TTL 3600
@        IN SOA ns1 hostmaster ( 7 3600 600 86400 300 )
         IN NS   ns1
ns1      IN A    192.0.2.53
";
const TOKEN: &str = "monitor-token";

fn start(config: &str) -> TestServer {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_ansi(false)
        .try_init();
    TestServer::start(&[("example.com.zone", ZONE)], config)
}

/// The A records answered for `name` (empty for NODATA).
fn answered(s: &TestServer, name: &str) -> BTreeSet<IpAddr> {
    let m = s.udp(&query(name, RecordType::A));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

fn set(addrs: &[&str]) -> BTreeSet<IpAddr> {
    addrs.iter().map(|a| a.parse().expect("ip")).collect()
}

/// One HTTP/1.1 request to the admin API; (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if method != "GET" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let (code, _, body) = http_exchange(addr, &req).expect("an HTTP response");
    (code, body)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The `/status` entry of endpoint `addr` of service `svc`.
fn status_endpoint(admin: SocketAddr, svc: &str, addr: &str) -> serde_json::Value {
    let (code, body) = http(admin, "GET", "/status", None, "");
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    v["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["name"] == svc)
        .unwrap_or_else(|| panic!("no service {svc} in {v}"))["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["address"] == addr)
        .unwrap_or_else(|| panic!("no endpoint {addr}"))
        .clone()
}

// ---------------------------------------------------------------------------------------------
// health lists and health_min

#[test]
fn health_min_1_keeps_an_endpoint_up_on_one_failing_profile_while_the_default_needs_all() {
    let stub = HealthStub::start();
    let port = stub.addr.port();
    // Two services over the same endpoint and the same two profiles: one probe per
    // (profile, target), whatever the number of services.
    let s = start(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
[health.a]
kind = "http"
port = {port}
path = "/a"
interval = "300ms"
timeout = "250ms"
rise = 1
fall = 1
[health.b]
kind = "http"
port = {port}
path = "/b"
interval = "300ms"
timeout = "250ms"
rise = 1
fall = 1
[[service]]
name = "any.example.com"
policy = "round-robin"
health = ["a", "b"]
health_min = 1
when_all_down = "empty"
endpoints = [{{ address = "127.0.0.1" }}]
[[service]]
name = "all.example.com"
policy = "round-robin"
health = ["a", "b"]
when_all_down = "empty"
endpoints = [{{ address = "127.0.0.1" }}]
"#
    ));
    let _prober = s.start_prober();
    let admin = s.start_admin().addr;
    let lo = set(&["127.0.0.1"]);
    assert!(
        wait_until(Duration::from_secs(3), || {
            let e = status_endpoint(admin, "all.example.com", "127.0.0.1");
            e["checks"]
                .as_array()
                .is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["last_probe"].is_object()))
        }),
        "both profiles probed"
    );
    assert_eq!(answered(&s, "any.example.com."), lo);
    assert_eq!(answered(&s, "all.example.com."), lo);

    // One probe per (profile, target): over 3 s at 300 ms, about 10 requests per path, not 20.
    let before = stub.hits();
    std::thread::sleep(Duration::from_secs(3));
    let after = stub.hits();
    let lo_ip: IpAddr = "127.0.0.1".parse().unwrap();
    for path in ["/a", "/b"] {
        let k = (path.to_string(), lo_ip);
        let n = after.get(&k).copied().unwrap_or(0) - before.get(&k).copied().unwrap_or(0);
        assert!(
            (7..=13).contains(&n),
            "{path}: {n} probes in 3 s (two services share one)"
        );
    }

    // Profile b fails: "all" (the default, every profile) leaves answers, "any" (1 of 2) stays.
    stub.set_failing("/b", None, true);
    assert!(
        wait_until(Duration::from_secs(3), || answered(&s, "all.example.com.")
            .is_empty()),
        "all.example.com still answered with b failing"
    );
    for _ in 0..10 {
        assert_eq!(answered(&s, "any.example.com."), lo);
    }
    // /status: each profile's result, and which decided.
    let e = status_endpoint(admin, "all.example.com", "127.0.0.1");
    assert_eq!(e["healthy"], false, "{e}");
    assert_eq!(e["health_min"], 2, "{e}");
    let checks = e["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 2, "{e}");
    assert_eq!(
        (
            &checks[0]["profile"],
            &checks[0]["healthy"],
            &checks[0]["decided"]
        ),
        (
            &serde_json::json!("a"),
            &serde_json::json!(true),
            &serde_json::json!(false)
        ),
        "{e}"
    );
    assert_eq!(
        (
            &checks[1]["profile"],
            &checks[1]["healthy"],
            &checks[1]["decided"]
        ),
        (
            &serde_json::json!("b"),
            &serde_json::json!(false),
            &serde_json::json!(true)
        ),
        "{e}"
    );
    assert!(
        checks[1]["last_probe"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("503"),
        "{e}"
    );
    assert!(
        e["decided_by"]
            .as_str()
            .unwrap_or("")
            .starts_with("down: b failed"),
        "{e}"
    );
    let e = status_endpoint(admin, "any.example.com", "127.0.0.1");
    assert_eq!(
        (&e["healthy"], &e["health_min"]),
        (&serde_json::json!(true), &serde_json::json!(1)),
        "{e}"
    );
    assert!(
        e["decided_by"]
            .as_str()
            .unwrap_or("")
            .starts_with("up: a passes"),
        "{e}"
    );

    // Recent health changes say which profile decided, not merely the last probe's result.
    assert!(
        wait_until(Duration::from_secs(3), || {
            let (_, body) = http(admin, "GET", "/status", None, "");
            json(&body)["events"].as_array().is_some_and(|ev| {
                ev.iter().any(|e| {
                    e["kind"] == "health"
                        && e["service"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("all.example.com"))
                        && e["reason"]
                            .as_str()
                            .is_some_and(|r| r.starts_with("down: b failed"))
                })
            })
        }),
        "no health event naming profile b: {}",
        http(admin, "GET", "/status", None, "").1
    );

    // `meridian status`: the deciding profile beside the verdict.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["status", "--admin", &format!("http://{admin}")])
        .output()
        .expect("run meridian status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.contains("all.example.com") && l.contains("down (b)")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("any.example.com") && l.contains("up (a)")),
        "{table}"
    );

    // explain, live: the same per profile.
    let (code, body) = http(
        admin,
        "GET",
        "/api/v1/explain?name=any.example.com&type=A",
        None,
        "",
    );
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    let c = &v["candidates"][0];
    assert_eq!(c["checks"][1]["profile"], "b", "{v}");
    assert_eq!(c["checks"][1]["healthy"], false, "{v}");
    assert_eq!(c["checks"][0]["decided"], true, "{v}");
    assert!(
        c["decided_by"].as_str().unwrap_or("").contains("needs 1"),
        "{v}"
    );

    // explain, offline: a `checks:` line per candidate (nothing probed offline).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["explain", "any.example.com", "--config"])
        .arg(s.config_path())
        .output()
        .expect("run meridian explain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("checks: a* up (not probed yet), b* up (not probed yet); up: a, b pass (2 of 2, needs 1)"),
        "{text}"
    );

    // Both fail: "any" goes too; both pass again: both come back.
    stub.set_failing("/a", None, true);
    assert!(
        wait_until(Duration::from_secs(3), || answered(&s, "any.example.com.")
            .is_empty()),
        "any.example.com still answered with a and b failing"
    );
    stub.set_failing("/a", None, false);
    stub.set_failing("/b", None, false);
    assert!(
        wait_until(Duration::from_secs(3), || answered(&s, "all.example.com.")
            == lo
            && answered(&s, "any.example.com.") == lo),
        "not back after recovery"
    );
}

#[test]
fn check_rejects_bad_health_lists_and_exec_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("not-exec.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
zones = "zones"
[health.web]
kind = "http"
[health.e1]
kind = "exec"
command = []
[health.e2]
kind = "exec"
command = ["check.sh", "{{address}}"]
[health.e3]
kind = "exec"
command = ["{script}", "{{addres}}"]
[health.p]
kind = "push"
command = ["/bin/true"]
[[service]]
name = "www.example.com"
policy = "round-robin"
health = ["web", "nope", "web"]
health_min = 4
endpoints = [{{ address = "192.0.2.1" }}]
"#,
        script = script.display()
    );
    let (_d, path) = config_dir(&[("example.com.zone", ZONE)], &config);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run meridian check");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for want in [
        "health.e1.command: is empty",
        "health.e2.command: `check.sh` is not an absolute path",
        "is not executable",
        "unknown placeholder `{addres}`",
        "health.p.command: only an `exec` profile runs a command",
        "no health profile `nope` is defined",
        "profile `web` is listed twice",
        "health_min: must be between 1 and the number of profiles",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// exec

/// Writes the check script: what it does is read from files in `dir` at every run, so the
/// test can change it. It notes its pid and arguments; `hang` backgrounds a sleep (noted too)
/// and waits for it, past any timeout.
fn write_script(dir: &Path) -> std::path::PathBuf {
    let d = dir.display();
    let script = dir.join("check.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
echo $$ > {d}/pid
printf '%s|' "$@" > {d}/args-$1
case "$(cat {d}/mode-$1 2>/dev/null)" in
  fail) exit 3 ;;
  hang) sleep 30 &
        echo $! > {d}/child
        wait
        exit 0 ;;
esac
echo "load=$(cat {d}/load-$1 2>/dev/null || echo 1)"
echo "more output that is not read"
exit 0
"#
        ),
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

/// `timing`: the profile's `interval` and `timeout` lines.
fn exec_config(script: &Path, extra_arg: &str, timing: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
[health.script]
kind = "exec"
command = ["{script}", "{{address}}", "{{port}}", "{extra_arg}"]
port = 8080
{timing}
rise = 1
fall = 1
[[service]]
name = "www.example.com"
policy = "least-loaded"
health = "script"
when_all_down = "empty"
endpoints = [{{ address = "192.0.2.1" }}, {{ address = "192.0.2.2" }}]
"#,
        script = script.display()
    )
}

#[test]
fn exec_check_passes_fails_and_feeds_least_loaded_without_a_shell() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let script = write_script(d);
    std::fs::write(d.join("load-192.0.2.1"), "0.2").unwrap();
    std::fs::write(d.join("load-192.0.2.2"), "0.9").unwrap();
    // Shell syntax in an argument reaches the program as it is: nothing runs it.
    let pwned = d.join("pwned");
    // A timeout generous for a shell script on a busy machine: this test is not about it.
    let s = start(&exec_config(
        &script,
        &format!("$(touch {})", pwned.display()),
        "interval = \"600ms\"\ntimeout = \"590ms\"",
    ));
    let _prober = s.start_prober();
    let (one, two) = (
        s.endpoint_state("www.example.com", "192.0.2.1"),
        s.endpoint_state("www.example.com", "192.0.2.2"),
    );
    assert!(
        wait_until(Duration::from_secs(3), || one.load() == Some(0.2)
            && two.load() == Some(0.9)),
        "loads {:?} {:?}",
        one.load(),
        two.load()
    );
    for _ in 0..10 {
        assert_eq!(answered(&s, "www.example.com."), set(&["192.0.2.1"]));
    }
    // A program's run time is no round trip to the endpoint: `latency` gets nothing from it.
    assert_eq!((one.rtt_us(), two.rtt_us()), (None, None));
    let args = std::fs::read_to_string(d.join("args-192.0.2.1")).expect("args");
    assert_eq!(
        args,
        format!("192.0.2.1|8080|$(touch {})|", pwned.display())
    );
    assert!(!pwned.exists(), "an argument was run by a shell");

    // load=N moves least-loaded.
    std::fs::write(d.join("load-192.0.2.1"), "5").unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || answered(&s, "www.example.com.")
            == set(&["192.0.2.2"])),
        "loads {:?} {:?}",
        one.load(),
        two.load()
    );

    // A non-zero exit is a failed probe.
    std::fs::write(d.join("mode-192.0.2.2"), "fail").unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || !two.healthy()),
        "still healthy: {:?}",
        two.last_probe()
    );
    assert_eq!(two.last_probe().expect("probed").reason, "exit status 3");
    assert_eq!(answered(&s, "www.example.com."), set(&["192.0.2.1"]));
    std::fs::remove_file(d.join("mode-192.0.2.2")).unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || two.healthy()),
        "not back"
    );
}

fn proc_gone_or_zombie(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The third field is the state; after the comm in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn exec_check_past_its_timeout_is_killed_with_what_it_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let script = write_script(d);
    std::fs::write(d.join("mode-192.0.2.1"), "hang").unwrap();
    let s = start(&exec_config(
        &script,
        "x",
        "interval = \"400ms\"\ntimeout = \"300ms\"",
    ));
    let _prober = s.start_prober();
    let one = s.endpoint_state("www.example.com", "192.0.2.1");
    assert!(
        wait_until(Duration::from_secs(4), || !one.healthy()
            && one.last_probe().is_some_and(|r| r.class == "timeout")),
        "not down by timeout: {:?}",
        one.last_probe()
    );
    // Stop it hanging, so that the next runs do not start new ones while we look.
    std::fs::write(d.join("mode-192.0.2.1"), "fail").unwrap();
    std::thread::sleep(Duration::from_millis(900));
    let child = std::fs::read_to_string(d.join("child")).expect("the sleep's pid");
    let child = child.trim();
    // The hung script's sleep was killed with its process group (the script itself was
    // reaped by the prober: its pid file has been rewritten by later runs since).
    assert!(
        wait_until(Duration::from_secs(2), || proc_gone_or_zombie(child)),
        "the check's child {child} is still running"
    );
    let reason = one.last_probe().expect("probed").reason.clone();
    assert!(
        reason.contains("exit status 3") || reason.contains("killed"),
        "{reason}"
    );
}

#[test]
fn exec_check_timeout_kills_the_script_itself() {
    // The script is the hung process here (it execs into sleep): its own pid must be gone,
    // reaped, not a zombie.
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let script = d.join("hang.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ >> {}/pids\nexec sleep 30\n",
            d.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = start(&format!(
        r#"
[health.hang]
kind = "exec"
command = ["{}"]
interval = "2s"
timeout = "300ms"
[[service]]
name = "www.example.com"
policy = "round-robin"
health = "hang"
endpoints = [{{ address = "192.0.2.1" }}]
"#,
        script.display()
    ));
    let _prober = s.start_prober();
    let one = s.endpoint_state("www.example.com", "192.0.2.1");
    assert!(
        wait_until(Duration::from_secs(3), || one
            .last_probe()
            .is_some_and(|r| r.class == "timeout")),
        "no timeout: {:?}",
        one.last_probe()
    );
    let pids = std::fs::read_to_string(d.join("pids")).expect("pids");
    let pid = pids.lines().next().expect("a pid").trim().to_string();
    assert!(
        wait_until(Duration::from_secs(1), || !Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "the timed-out check {pid} is still there (running or a zombie): {:?}",
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
    );
    assert!(!one.healthy());
}

// ---------------------------------------------------------------------------------------------
// push

fn push(admin: SocketAddr, token: Option<&str>, body: &str) -> (u16, String) {
    http(admin, "PUT", "/api/v1/health", token, body)
}

#[test]
fn pushed_states_decide_feed_least_loaded_and_expire() {
    let s = start(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
[health.feed]
kind = "push"
interval = "300ms"
expire = "1200ms"
[health.web]
kind = "http"
[[service]]
name = "www.example.com"
policy = "least-loaded"
health = "feed"
when_all_down = "empty"
endpoints = [{{ address = "192.0.2.1" }}, {{ address = "192.0.2.2" }}]
[[service]]
name = "web.example.com"
policy = "round-robin"
health = "web"
endpoints = [{{ address = "192.0.2.9" }}]
"#
    ));
    let _prober = s.start_prober();
    let admin = s.start_admin().addr;
    let body = |ep: &str, up: bool, load: f64| {
        format!(r#"{{"profile": "feed", "endpoint": "{ep}", "up": {up}, "load": {load}}}"#)
    };

    // The token, as for every mutating call.
    assert_eq!(push(admin, None, &body("192.0.2.1", true, 0.1)).0, 401);
    assert_eq!(
        push(admin, Some("wrong"), &body("192.0.2.1", true, 0.1)).0,
        401
    );
    // Unknown profile, unknown endpoint: 404 saying which.
    let (code, text) = push(
        admin,
        Some(TOKEN),
        r#"{"profile": "nope", "endpoint": "192.0.2.1", "up": true}"#,
    );
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("no health profile `nope`"), "{text}");
    let (code, text) = push(admin, Some(TOKEN), &body("192.0.2.77", true, 0.1));
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("no endpoint `192.0.2.77`"), "{text}");
    // An endpoint that exists but is not checked by the profile: 404 too.
    let (code, text) = push(
        admin,
        Some(TOKEN),
        r#"{"profile": "feed", "endpoint": "192.0.2.9", "up": true}"#,
    );
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("not checked by profile `feed`"), "{text}");
    // A profile that probes by itself does not take pushes.
    let (code, text) = push(
        admin,
        Some(TOKEN),
        r#"{"profile": "web", "endpoint": "192.0.2.9", "up": false}"#,
    );
    assert_eq!(code, 409, "{text}");
    assert!(text.contains("only `push` profiles"), "{text}");
    // Bad bodies: 400; over 64 KiB: 413.
    assert_eq!(push(admin, Some(TOKEN), "{").0, 400);
    assert_eq!(
        push(
            admin,
            Some(TOKEN),
            r#"{"profile": "feed", "endpoint": "192.0.2.1", "up": true, "load": -1}"#
        )
        .0,
        400
    );
    let mut c = TcpStream::connect(admin).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(
        format!(
            "PUT /api/v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: 70000\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");

    // Up with loads: least-loaded follows them.
    let feed = |a: &str, up: bool, l: f64| {
        let (code, text) = push(admin, Some(TOKEN), &body(a, up, l));
        assert_eq!(code, 200, "{text}");
    };
    feed("192.0.2.1", true, 0.1);
    feed("192.0.2.2", true, 0.9);
    for _ in 0..10 {
        assert_eq!(answered(&s, "www.example.com."), set(&["192.0.2.1"]));
    }
    feed("192.0.2.1", true, 0.95);
    assert_eq!(answered(&s, "www.example.com."), set(&["192.0.2.2"]));
    // Down as pushed, at once.
    feed("192.0.2.2", false, 0.0);
    assert_eq!(answered(&s, "www.example.com."), set(&["192.0.2.1"]));
    let e = status_endpoint(admin, "www.example.com", "192.0.2.2");
    assert_eq!(e["checks"][0]["last_probe"]["reason"], "pushed down", "{e}");

    // Kept fresh, .1 stays up past several expiry periods; .2, up once and never refreshed,
    // expires.
    // The same from the shell: `meridian push`.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
            .arg("push")
            .args(["--admin", &format!("http://{admin}"), "--token", TOKEN])
            .args(args)
            .output()
            .expect("run meridian push")
    };
    let out = cli(&["--profile", "nope", "--endpoint", "192.0.2.2", "--up"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no health profile `nope`"),
        "{out:?}"
    );
    let out = cli(&[
        "--profile",
        "feed",
        "--endpoint",
        "192.0.2.2",
        "--up",
        "--load",
        "0.5",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("www.example.com  healthy"),
        "{out:?}"
    );
    let t0 = Instant::now();
    let two = s.endpoint_state("www.example.com", "192.0.2.2");
    let one = s.endpoint_state("www.example.com", "192.0.2.1");
    let mut expired_after = None;
    while t0.elapsed() < Duration::from_millis(3500) {
        feed("192.0.2.1", true, 0.95);
        assert!(one.healthy(), "a refreshed state expired");
        if expired_after.is_none() && !two.healthy() {
            expired_after = Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = expired_after.expect("the unrefreshed state never expired");
    assert!(
        after >= Duration::from_millis(1100) && after <= Duration::from_millis(2700),
        "expired after {after:?} (expire 1.2 s, checked every 300 ms)"
    );
    assert_eq!(answered(&s, "www.example.com."), set(&["192.0.2.1"]));
    let e = status_endpoint(admin, "www.example.com", "192.0.2.2");
    assert!(
        e["checks"][0]["last_probe"]["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("expired"),
        "{e}"
    );
    // Nothing pushed at all: everything expires; the service has nothing to answer.
    assert!(
        wait_until(Duration::from_secs(3), || answered(&s, "www.example.com.")
            .is_empty()),
        "still answered with every pushed state expired"
    );
}

// ---------------------------------------------------------------------------------------------
// reloads

#[test]
fn a_reload_that_adds_a_profile_or_changes_health_min_applies_at_once() {
    let stub = HealthStub::start();
    let port = stub.addr.port();
    stub.set_failing("/b", None, true);
    let profiles = format!(
        r#"
[health.a]
kind = "http"
port = {port}
path = "/a"
interval = "300ms"
timeout = "250ms"
rise = 1
fall = 1
[health.b]
kind = "http"
port = {port}
path = "/b"
interval = "300ms"
timeout = "250ms"
rise = 1
fall = 1
"#
    );
    let service = |health: &str| {
        format!(
            r#"{profiles}
[[service]]
name = "www.example.com"
policy = "round-robin"
{health}
when_all_down = "empty"
endpoints = [{{ address = "127.0.0.1" }}]
"#
        )
    };
    let s = start(&service(r#"health = "a""#));
    let _prober = s.start_prober();
    let lo = set(&["127.0.0.1"]);
    let rewrite = |text: &str| {
        let old = std::fs::read_to_string(s.config_path()).unwrap();
        let head = &old[..old.find("\n[health.").expect("profiles")];
        std::fs::write(s.config_path(), format!("{head}\n{text}")).unwrap();
        s.reload();
    };
    assert!(
        wait_until(Duration::from_secs(3), || s
            .endpoint_state("www.example.com", "127.0.0.1")
            .last_probe()
            .is_some()),
        "not probed"
    );
    assert_eq!(answered(&s, "www.example.com."), lo);

    // b (failing) joins the list: every profile must pass by default, so the endpoint leaves.
    rewrite(&service(r#"health = ["a", "b"]"#));
    assert!(
        wait_until(Duration::from_secs(3), || answered(&s, "www.example.com.")
            .is_empty()),
        "still answered with b failing and needed"
    );
    let probed = s.endpoint_state("www.example.com", "127.0.0.1");
    // health_min = 1: the same state (same profiles), its verdict decided again at once.
    rewrite(&service("health = [\"a\", \"b\"]\nhealth_min = 1"));
    assert!(
        std::sync::Arc::ptr_eq(&probed, &s.endpoint_state("www.example.com", "127.0.0.1")),
        "a changed health_min made a new state"
    );
    assert_eq!(answered(&s, "www.example.com."), lo);
}

// ---------------------------------------------------------------------------------------------
// one probe per (profile, target)

#[test]
fn a_hundred_services_over_ten_endpoints_and_two_profiles_make_twenty_probes_per_interval() {
    let stub = HealthStub::start();
    let mut config = String::from(
        r#"
[health.a]
kind = "http"
interval = "500ms"
timeout = "400ms"
[health.b]
kind = "http"
interval = "500ms"
timeout = "400ms"
expect_body = "ok"
"#,
    );
    let endpoints: Vec<String> = (1..=10)
        .map(|i| {
            format!(
                r#"{{ address = "192.0.2.{i}", check = "{}" }}"#,
                stub.url(&format!("/e{i}"))
            )
        })
        .collect();
    for n in 0..100 {
        config.push_str(&format!(
            "[[service]]\nname = \"s{n}.example.com\"\npolicy = \"round-robin\"\nhealth = [\"a\", \"b\"]\nendpoints = [{}]\n",
            endpoints.join(", ")
        ));
    }
    let s = start(&config);
    let prober = s.start_prober();
    assert!(
        wait_until(Duration::from_secs(3), || prober.targets() > 0),
        "prober did not start"
    );
    // 10 endpoints × 2 profiles (their settings differ, so they are two probes each).
    assert_eq!(prober.targets(), 20);
    std::thread::sleep(Duration::from_millis(700));
    let before = stub.hits();
    std::thread::sleep(Duration::from_secs(3));
    let after = stub.hits();
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let mut total = 0;
    for i in 1..=10 {
        let k = (format!("/e{i}"), lo);
        let n = after.get(&k).copied().unwrap_or(0) - before.get(&k).copied().unwrap_or(0);
        // Two profiles every 500 ms over 3 s: 12 (± the phase at both ends), never 100×.
        assert!((8..=16).contains(&n), "/e{i}: {n} probes in 3 s");
        total += n;
    }
    println!("probes in 3 s at 500 ms, 100 services × 10 endpoints × 2 profiles: {total}");
    let st = s.endpoint_state("s99.example.com", "192.0.2.10");
    assert!(st.healthy() && st.last_probe().is_some_and(|r| r.ok));
}
